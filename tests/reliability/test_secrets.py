"""No one learns the key: not from logs, errors, the manifest, a terminal, ``config check`` or the
emulator; the webhook receiver takes only what it should; the local server stays on loopback;
TLS is verified, with a custom CA bundle as the one way to trust a private service.

The key used here holds characters that URL-encoding changes (``+ / = &``), so both its raw and
its percent-encoded spellings are searched for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from rfbatch.emulator import Emulator, EmulatorConfig, FaultProfile, FaultRates
from rfbatch.settings import Settings
from tests.conftest import WORKSPACE
from tests.daemon.support import daemon, write_config
from tests.e2e.support import RFBATCH, cli_env, make_tree, run_cli
from tests.reliability.support_b import (
    HostileApi,
    hostile_env,
    run_in_pty,
    running,
    self_signed,
    server_context,
    state_bytes,
)
from tests.waiting import wait_for

KEY = "rf-Secret+key/with=odd&chars-7Q2x9"
WRONG = "rf-wrong+key/also=secret-Z8v1"


def leaks(text: str | bytes, *secrets: str) -> list[str]:
    """Which spellings of ``secrets`` (raw and percent-encoded) appear in ``text``."""
    blob = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    found = []
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret, safe="/")}:
            if form.encode() in blob:
                found.append(form)
    return found


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(api_key=KEY, workspace=WORKSPACE, state_dir=tmp_path / "emulator")


def env_for(emulator: Emulator, state: Path, key: str = KEY) -> dict[str, str]:
    env = cli_env(emulator, state)
    env["ROBOFLOW_API_KEY"] = key
    return env


# --- logs, errors, manifest ----------------------------------------------------------------


async def test_the_key_never_reaches_logs_errors_or_the_manifest(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 40)
    state = tmp_path / "state"
    out = tmp_path / "out"
    env = env_for(emulator, state)
    env["RFBATCH_API__RETRY_ATTEMPTS"] = "10"
    # Faults on every route, so that retries, refusals and resets are logged at every level.
    emulator.set_faults(
        FaultProfile(
            routes={
                "*": FaultRates(status_429=0.1, status_503=0.1, reset=0.05),
                "put": FaultRates(reset=0.2, expire=0.1),
                "download": FaultRates(truncate=0.2, expire=0.1),
            },
            seed=7,
            retry_after=0,
        )
    )
    sync = ["sync", str(src), "--workflow", "wf", "--output", str(out), "--log-level", "debug"]

    done = await run_cli([*sync, "--json"], env)

    assert done.returncode == 0, done.stderr.decode()[-3000:]
    logs = done.stderr.decode()
    assert '"api.retry"' in logs or '"transfer.retry"' in logs  # faults met, and logged
    assert leaks(done.stdout + done.stderr, KEY) == []
    emulator.set_faults(None)

    # Runs that end in an error: a wrong key, and a service that cannot be reached.
    upload = ["upload", str(src), "--batch", "b", "--log-level", "debug"]
    wrong = await run_cli(upload, env_for(emulator, tmp_path / "s2", WRONG))
    assert wrong.returncode == 3
    assert "check ROBOFLOW_API_KEY" in wrong.stderr.decode()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = env_for(emulator, tmp_path / "s3")
    unreachable.update(API_BASE_URL=f"http://127.0.0.1:{port}", RFBATCH_API__RETRY_TIMEOUT="1")
    gone = await run_cli(["batch", "list"], unreachable)
    assert gone.returncode == 3
    assert "connection error" in gone.stderr.decode()
    for run in (wrong, gone):
        assert "Traceback" not in run.stderr.decode()
        assert leaks(run.stdout + run.stderr, KEY, WRONG) == []

    # The manifest (database, WAL, lock) and the results hold neither key either.
    for folder in (state, tmp_path / "s2", out):
        assert leaks(state_bytes(folder), KEY, WRONG) == [], folder


async def test_progress_on_a_terminal_shows_no_key(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 30)
    env = env_for(emulator, tmp_path / "state")
    env.pop("RFBATCH_LOG__FORMAT")  # a terminal gets the console renderer
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(status_503=0.3)}, retry_after=0))
    args = ["upload", str(src), "--batch", "tty", "--log-level", "debug"]

    code, screen = await anyio.to_thread.run_sync(lambda: run_in_pty(args, env))

    assert code == 0, screen[-3000:]
    assert "30/30 files" in screen  # the progress bar was drawn
    assert "api.call" in screen  # debug lines were drawn too
    assert leaks(screen, KEY) == []


def write_secret_config(path: Path, **api: Any) -> Path:
    lines = ["[api]", f"key = {json.dumps(KEY)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in api.items()]
    lines += ["[webhook]", 'authorization = "Bearer rf_publishable-SECRET-a1b2"']
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_config_check_masks_every_secret(tmp_path: Path) -> None:
    config = write_secret_config(tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RFBATCH_", "ROBOFLOW_"))}

    shown = await anyio.run_process(
        [*RFBATCH, "config", "check", "-c", str(config)], env=env, check=False
    )
    env["ROBOFLOW_API_KEY"] = WRONG  # the environment wins: it is the key shown (masked)
    bad = write_secret_config(tmp_path / "bad.toml", read_timeout=-1)
    refused = await anyio.run_process(
        [*RFBATCH, "config", "check", "-c", str(bad)], env=env, check=False
    )

    assert shown.returncode == 0, shown.stderr.decode()
    effective = json.loads(shown.stdout)
    assert effective["api"]["key"] == "**********"
    assert effective["webhook"]["authorization"] == "**********"
    assert refused.returncode == 2
    assert "api.read_timeout" in refused.stderr.decode()
    for run in (shown, refused):
        text = run.stdout + run.stderr
        assert leaks(text, KEY, WRONG, "publishable-SECRET-a1b2") == []


async def test_the_emulator_never_logs_the_key(tmp_path: Path) -> None:
    state = tmp_path / "emulator"
    src = tmp_path / "src"
    make_tree(src, 12)
    async with await anyio.open_process(
        [*RFBATCH, "emulator", "--port", "0", "--api-key", KEY, "--state-dir", str(state)],
        env={k: v for k, v in os.environ.items() if not k.startswith("ROBOFLOW_")},
    ) as emu:
        assert emu.stdout is not None
        assert emu.stderr is not None
        output: list[str] = []

        async def collect(stream: Any) -> None:
            async for text in TextReceiveStream(stream):
                output.append(text)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, emu.stdout)
            tg.start_soon(collect, emu.stderr)
            await wait_for(
                lambda: "listening on" in "".join(output),
                '"listening on" in "".join(output)',
                timeout=60,
            )
            url = "".join(output).split("listening on ")[1].split()[0]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RFBATCH_", "API_"))}
            env.update(API_BASE_URL=url, RFBATCH_STATE__DIR=str(tmp_path / "state"))
            env.update(RFBATCH_SCAN__SETTLE_SECONDS="0", RFBATCH_UPLOAD__INGEST_POLL_SECONDS="0.05")
            good = await run_cli(
                ["sync", str(src), "--workflow", "wf", "--output", str(tmp_path / "out")],
                {**env, "ROBOFLOW_API_KEY": KEY},
            )
            bad = await run_cli(["batch", "list"], {**env, "ROBOFLOW_API_KEY": WRONG})
            emu.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await emu.wait()
            tg.cancel_scope.cancel()

    assert good.returncode == 0, good.stderr.decode()[-2000:]
    assert bad.returncode == 3
    assert leaks("".join(output), KEY, WRONG) == []
    assert leaks(state_bytes(state), KEY, WRONG) == []


# --- the daemon's local server: webhooks and loopback ----------------------------------------

AUTH = "Bearer rf_publishable-SECRET-c3d4"


def job_event(event_id: str) -> dict[str, Any]:
    return {
        "type": "roboflow-batch-job-notification-v1",
        "event_id": event_id,
        "job_id": "j-some-batch",
        "job_state": "success",
        "delivery_attempt": 1,
    }


async def test_the_daemon_webhook_refuses_what_it_should_and_ignores_replays(
    emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "config.toml",
        emulator,
        tmp_path,
        api={"key": KEY},
        webhook={
            "public_url": "http://127.0.0.1:9/webhook",
            "authorization": AUTH,
            "max_body_bytes": 2048,
        },
    )
    async with (
        daemon(config, emulator, state, api_key=KEY) as proc,
        aiohttp.ClientSession() as http,
    ):
        assert proc.url is not None
        hook = f"{proc.url}/webhook"

        async def post(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(hook, data=body, headers=headers) as resp:
                return resp.status, await resp.json()

        event = json.dumps(job_event("evt-1")).encode()
        authorized = {"Authorization": AUTH, "Content-Type": "application/json"}
        outcomes = [
            await post(event, {"Content-Type": "application/json"}),
            await post(event, {"Authorization": "Bearer rf_guess"}),
            await post(event, {"Authorization": AUTH.lower()}),
            await post(b'{"pad": "' + b"x" * 4096 + b'"}', authorized),
            await post(json.dumps(job_event("\ud800")).encode(), authorized),
            await post(b"{not json", authorized),
            await post(event, authorized),
            await post(event, authorized),
        ]
        metrics = (await proc.fetch("/metrics"))[1]
        code = await proc.terminate()

    assert outcomes == [
        (401, {"error": "missing_authorization"}),
        (401, {"error": "bad_authorization"}),
        (401, {"error": "bad_authorization"}),
        (413, {"error": "too_large"}),
        (400, {"error": "malformed"}),
        (400, {"error": "malformed"}),
        (200, {"status": "ok"}),
        (200, {"status": "duplicate"}),
    ]
    assert code == 0
    assert "rfbatch" in metrics
    logs = "\n".join(proc.raw)
    assert "Traceback" not in logs
    assert leaks(logs, KEY, AUTH, "publishable-SECRET-c3d4") == []
    # Only the accepted event was recorded; the replay added nothing.
    conn = sqlite3.connect(state / "manifest.sqlite3")
    try:
        events = [r[0] for r in conn.execute("SELECT event_id FROM webhook_events")]
    finally:
        conn.close()
    assert events == ["evt-1"]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port``, from /proc/net/tcp and tcp6."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


async def test_the_daemon_server_binds_loopback_by_default(
    emulator: Emulator, tmp_path: Path
) -> None:
    default = Settings().daemon.http_listen
    host, _, port = default.rpartition(":")
    assert host == "127.0.0.1"
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", int(port)))  # noqa: S104 only to see whether the port is free
        except OSError:
            pytest.skip(f"port {port} is taken on this machine")
    config = write_config(tmp_path / "config.toml", emulator, tmp_path, api={"key": KEY})
    text = config.read_text().replace('http_listen = "127.0.0.1:0"\n', "")
    config.write_text(text)
    assert "http_listen" not in text

    async with daemon(config, emulator, tmp_path / "state", api_key=KEY) as proc:
        assert proc.url == f"http://127.0.0.1:{port}"
        status, _ = await proc.fetch("/healthz")
        addresses = listening_addresses(int(port))
        await proc.terminate()

    assert status == 200
    assert addresses == {"0100007F"}  # 127.0.0.1 only: no 0.0.0.0, no IPv6 wildcard


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
async def tls_api(tmp_path: Path) -> AsyncIterator[tuple[HostileApi, Path]]:
    try:
        cert, key = await anyio.to_thread.run_sync(self_signed, tmp_path)
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")
    api = HostileApi(files=[("a.bin", b"over tls"), ("sub/b.bin", b"verified")])
    async with running(api, ssl_context=server_context(cert, key)) as served:
        yield served, cert


async def test_tls_is_verified_and_a_ca_bundle_trusts_a_private_service(
    tls_api: tuple[HostileApi, Path], tmp_path: Path
) -> None:
    api, cert = tls_api
    env = hostile_env(api.base_url, tmp_path / "state", KEY)
    env["RFBATCH_API__RETRY_ATTEMPTS"] = "6"
    out = tmp_path / "out"
    export = [*RFBATCH, "export", "one", "--output", str(out), "--json"]

    refused = await anyio.run_process(export, env=env, check=False)
    reached = list(api.requests)
    trusted = await anyio.run_process(
        export, env={**env, "RFBATCH_API__CA_BUNDLE": str(cert)}, check=False
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    broken = await anyio.run_process(
        export, env={**env, "RFBATCH_API__CA_BUNDLE": str(garbage)}, check=False
    )

    stderr = refused.stderr.decode()
    assert refused.returncode == 3, stderr
    assert "TLS certificate verification failed for 127.0.0.1" in stderr
    assert "set [api] ca_bundle" in stderr
    assert '"api.retry"' not in stderr  # a bad certificate is not retried
    assert reached == []  # not one request was sent over the unverified connection
    assert trusted.returncode == 0, trusted.stderr.decode()[-3000:]
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.bin")} == {
        "a.bin": b"over tls",
        "sub/b.bin": b"verified",
    }
    assert broken.returncode == 2
    assert "holds no usable PEM certificate" in broken.stderr.decode()
    for run in (refused, trusted, broken):
        assert "Traceback" not in run.stderr.decode()
        assert leaks(run.stdout + run.stderr, KEY) == []
