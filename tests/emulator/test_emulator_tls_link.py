"""The emulator as users meet the service: over HTTPS, and behind a shaped WAN link."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.emulator.link import LinkProfile, TokenBucket
from rfbatch.emulator.tls import make_certificates
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import cli_env, make_tree, received_digests, run_cli, sha
from tests.emulator.support import Api

MB = 1_000_000


@asynccontextmanager
async def emulator_with(tmp_path: Path, **options: Any) -> AsyncIterator[Emulator]:
    config = EmulatorConfig(
        api_key=API_KEY, workspace=WORKSPACE, state_dir=tmp_path / "emu", store="digests"
    )
    async with running_emulator(replace(config, **options)) as emu:
        yield emu


# --- HTTPS -----------------------------------------------------------------------------------


async def test_rfbatch_uploads_over_https_trusting_the_emulators_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    assert certs.ca is not None
    src = tmp_path / "src"
    files = make_tree(src, 12)
    async with emulator_with(tmp_path, tls=certs) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        env = cli_env(emu, tmp_path / "state")
        untrusted = await run_cli(["upload", str(src), "--batch", "tls"], env)
        trusted = {}
        for variable in ("RFBATCH_API__CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
            run_env = {
                **env,
                variable: str(certs.ca),
                "RFBATCH_STATE__DIR": str(tmp_path / variable),
            }
            trusted[variable] = await run_cli(
                ["upload", str(src), "--batch", f"tls-{variable[:4].lower()}"], run_env
            )
        digests = {b: received_digests(emu, b) for b in ("tls-rfba", "tls-requ")}

    # Certificate checks are never off: an untrusted emulator is one line and exit 3.
    assert untrusted.returncode == 3, untrusted.stderr.decode()
    [line] = [x for x in untrusted.stderr.decode().splitlines() if "error" in x]
    assert "certificate" in line
    for variable, done in trusted.items():
        assert done.returncode == 0, (variable, done.stderr.decode())
    for got in digests.values():
        assert got == {sha(data): 1 for data in files.values()}


# --- the link --------------------------------------------------------------------------------


def test_link_profiles_parse_and_refuse_with_the_part_named() -> None:
    assert LinkProfile.parse("rtt=40ms,conn=25MB/s,total=100MB/s") == LinkProfile(
        0.04, 25 * MB, 100 * MB
    )
    assert LinkProfile.parse("conn=2MiB/s") == LinkProfile(0.0, 2 * 2**20, None)
    assert LinkProfile.parse(" rtt = 0.1s ") == LinkProfile(0.1)
    for bad, named in (
        ("rtt=fast", "rtt=fast"),
        ("conn=25MB", "conn=25MB"),
        ("speed=1MB/s", "speed=1MB/s"),
        ("total=0MB/s", "total=0MB/s"),
    ):
        with pytest.raises(ValueError, match=named):
            LinkProfile.parse(bad)


def test_a_token_bucket_lends_a_burst_then_charges_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(1 * MB, clock=lambda: now[0])
    assert bucket.take(int(bucket.burst)) == 0.0  # the burst is free
    assert bucket.take(MB) == pytest.approx(1.0)  # then a second per megabyte
    now[0] = 1.0
    assert bucket.take(0) == 0.0  # the debt is paid by waiting


async def timed_puts(api: Api, count: int, size: int) -> float:
    """Seconds for ``count`` PUTs of ``size`` bytes each to run at once."""
    urls = []
    for i in range(count):
        reply = await api.post(api.ds("/batches/wan/upload/video"), fileName=f"v{i}.mp4")
        assert reply.status == 200, reply.body
        urls.append(reply.body["signedURLDetails"])
    body = os.urandom(size)

    async def put(details: dict[str, Any]) -> None:
        async with api.session.put(
            details["uploadURL"], data=body, headers=details["extensionHeaders"]
        ) as resp:
            assert resp.status == 200

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for details in urls:
            tg.start_soon(put, details)
    return time.monotonic() - started


async def test_a_connection_is_paced_to_conn_and_all_of_them_to_total(tmp_path: Path) -> None:
    # The shaper only slows transfers down to its rates; loopback is far faster than they are.
    timeout = aiohttp.ClientTimeout(total=120)
    link = LinkProfile(conn=20 * MB, total=40 * MB)
    async with (
        emulator_with(tmp_path, link=link) as emu,
        aiohttp.ClientSession(timeout=timeout) as http,
    ):
        api = Api(emu, http)
        one = await timed_puts(api, 1, 100 * MB)
        four = await timed_puts(api, 4, 100 * MB)
    # The buckets guarantee the floor (a burst of 1 MB is all they lend): 100 MB at 20 MB/s is
    # at least 4.95 s, and four at once share 40 MB/s, so at least 9.9 s, where the per-connection
    # cap alone would allow 5 s. How far above the floor a run lands depends on the machine's
    # load, so only the floor is asserted: a shaper that lets bytes through early fails it.
    assert one >= 4.9
    assert four >= 9.8
    # And the four ran side by side rather than one after another (20 s at 20 MB/s each), which
    # a generous bound shows without timing the machine.
    assert four < 2 * one + 5


async def test_every_answer_waits_a_round_trip_and_a_new_connection_its_handshakes(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path / "certs")
    assert certs.ca is not None
    trust = ssl.create_default_context(cafile=str(certs.ca))
    connector = aiohttp.TCPConnector(ssl=trust, limit=1)
    reused = []

    async def on_reuse(*_: object) -> None:
        reused.append(True)

    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(on_reuse)
    async with (
        emulator_with(tmp_path, tls=certs, link=LinkProfile(rtt=0.2)) as emu,
        aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as http,
    ):
        url = f"{emu.base_url}/?api_key={API_KEY}"
        times = []
        for _ in range(2):
            started = time.monotonic()
            async with http.get(url) as resp:
                assert resp.status == 200
            times.append(time.monotonic() - started)
    first, again = times
    assert first >= 0.6  # TCP and TLS handshakes, then the request's own round trip
    # The second request reused the connection, so it paid only its round trip (floors only:
    # a loaded machine may add to either time).
    assert reused == [True]
    assert again >= 0.2
