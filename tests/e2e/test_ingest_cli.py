"""``rfbatch ingest references`` and ``rfbatch ingest roboql`` against the emulator (loopback only).

Reference files point at a file server this test starts on 127.0.0.1; the https case serves the
JSONL itself over TLS with a self-signed certificate that only the emulator's process trusts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from rfbatch.emulator import Emulator, EmulatorConfig
from rfbatch.localfs.scan import iter_scan
from rfbatch.media import FoundFile, SourceSpec
from rfbatch.samples import png_bytes
from tests.conftest import API_KEY, emulator_config_with
from tests.e2e.support import batch_items, cli_env, run_cli, run_env
from tests.reliability.support_b import self_signed, server_context

_VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(2000)


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    # The reference files are served over plain HTTP on loopback, which the strict emulator (like
    # the official client) refuses for references; the https path has a test of its own below.
    return emulator_config_with(tmp_path, allow_http_references=True)


@asynccontextmanager
async def file_server(
    files: dict[str, bytes], tls: tuple[Path, Path] | None = None
) -> AsyncIterator[str]:
    """Serve ``files`` under ``/files/<name>`` on 127.0.0.1; yields the base URL."""

    async def handle(request: web.Request) -> web.Response:
        data = files.get(request.match_info["name"])
        return web.Response(status=404) if data is None else web.Response(body=data)

    app = web.Application()
    app.router.add_get("/files/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = server_context(*tls) if tls is not None else None
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}/files"
    finally:
        await runner.cleanup()


def _jsonl(refs: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in refs).encode()


def _images(count: int) -> dict[str, bytes]:
    return {f"ref-{i}.png": png_bytes(8, 8, 500 + i) for i in range(count)}


async def _ingest(
    emulator: Emulator, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[bytes]:
    return await run_cli(["ingest", *args], cli_env(emulator, tmp_path / "state"))


@pytest.mark.parametrize("videos", [False, True])
async def test_references_from_a_jsonl_file_are_confirmed(
    emulator: Emulator, tmp_path: Path, videos: bool
) -> None:
    files = {f"clip-{i}.mp4": _VIDEO + bytes([i]) for i in range(2)} if videos else _images(3)
    async with file_server(files) as base:
        refs = tmp_path / "refs.jsonl"
        refs.write_bytes(_jsonl([{"name": n, "url": f"{base}/{n}"} for n in files]))
        extra = ["--videos"] if videos else []
        done = await _ingest(
            emulator, tmp_path, "references", str(refs), "--batch", "refs", *extra, "--json"
        )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["confirmed"] is True
    assert report["count"] == report["expected"] == len(files)
    assert report["missing"] == []
    assert len(report["ingest_ids"]) == 1
    assert sorted(i["name"] for i in batch_items(emulator, "refs")) == sorted(files)


async def test_same_input_gets_the_same_ingest_id(emulator: Emulator, tmp_path: Path) -> None:
    files = _images(2)
    async with file_server(files) as base:
        refs = tmp_path / "refs.jsonl"
        refs.write_bytes(_jsonl([{"name": n, "url": f"{base}/{n}"} for n in files]))
        args = ("references", str(refs), "--batch", "again", "--json", "--quiet-seconds", "1")
        first = await _ingest(emulator, tmp_path, *args)
        second = await _ingest(emulator, tmp_path, *args)
    assert first.returncode == second.returncode == 0, second.stderr.decode()
    assert json.loads(first.stdout)["ingest_ids"] == json.loads(second.stdout)["ingest_ids"]
    given = await _ingest(
        emulator,
        tmp_path,
        "references",
        str(refs),
        "--batch",
        "again",
        "--ingest-id",
        "mine",
        "--json",
        "--quiet-seconds",
        "1",
    )
    assert json.loads(given.stdout)["ingest_ids"] == ["mine"]


def _refs_with_an_unsafe_one(tmp_path: Path, base: str, files: dict[str, bytes]) -> Path:
    """A references file: ``files`` as served at ``base``, plus far.png, which is not loopback:
    the emulator refuses it as an unsafe URL without fetching anything."""
    refs = [{"name": n, "url": f"{base}/{n}"} for n in files]
    refs.append({"name": "far.png", "url": "https://storage.invalid/far.png"})
    path = tmp_path / "refs.jsonl"
    path.write_bytes(_jsonl(refs))
    return path


async def test_a_refused_reference_is_named(emulator: Emulator, tmp_path: Path) -> None:
    files = _images(2)
    async with file_server(files) as base:
        path = _refs_with_an_unsafe_one(tmp_path, base, files)
        done = await _ingest(
            emulator,
            tmp_path,
            "references",
            str(path),
            "--batch",
            "part",
            "--json",
            "--quiet-seconds",
            "1",
        )
    assert done.returncode == 1, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["confirmed"] is False
    assert report["count"] == 2
    assert report["missing"] == ["far.png"]


async def test_a_refused_reference_is_named_with_the_services_reason(
    emulator: Emulator, tmp_path: Path
) -> None:
    """With rfbatch's own receiver configured, files-status names the file and why; the wait
    ends on it rather than on the (here very long) quiet window."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_WEBHOOK__LISTEN"] = f"127.0.0.1:{port}"
    env["RFBATCH_WEBHOOK__PUBLIC_URL"] = f"http://127.0.0.1:{port}/webhook"
    files = _images(2)
    async with file_server(files) as base:
        path = _refs_with_an_unsafe_one(tmp_path, base, files)
        args = ["references", str(path), "--batch", "hooked", "--json", "--quiet-seconds", "600"]
        done = await run_cli(["ingest", *args], env)
    assert done.returncode == 1, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["missing"] == ["far.png"]
    assert "trusted host" in report["reasons"]["far.png"]
    hooks = emulator.state()["webhooks"]
    assert any(str(h.get("url", "")).endswith("/webhook") for h in hooks)


async def test_an_http_references_url_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    done = await _ingest(
        emulator, tmp_path, "references", "http://127.0.0.1:9/refs.jsonl", "--batch", "b"
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "https://" in lines[0]


@pytest.mark.parametrize(
    ("line", "says"),
    [("{not json", "not JSON"), ('{"name": "a.png"}', "needs a string name and url")],
)
async def test_a_bad_line_is_named_with_its_file(
    emulator: Emulator, tmp_path: Path, line: str, says: str
) -> None:
    path = tmp_path / "refs.jsonl"
    path.write_text('{"name": "ok.png", "url": "https://127.0.0.1/ok.png"}\n' + line + "\n")
    done = await _ingest(emulator, tmp_path, "references", str(path), "--batch", "b")
    assert done.returncode == 2
    err = done.stderr.decode()
    assert f"{path}:2:" in err
    assert says in err


async def test_a_cloud_storage_path_without_the_cloud_extra_says_what_to_install(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The test install has fsspec but not s3fs: one line naming the extra, before any call.
    done = await _ingest(emulator, tmp_path, "references", "s3://bucket/images/", "--batch", "b")
    assert done.returncode == 2
    err = done.stderr.decode()
    assert len(err.strip().splitlines()) == 1
    assert "s3fs" in err
    assert "rfbatch[cloud]" in err
    assert "b" not in emulator.state()["batches"]


@pytest.mark.parametrize("videos", [False, True])
async def test_references_from_an_https_url(tmp_path: Path, videos: bool) -> None:
    """The service fetches the JSONL itself: an emulator process that trusts the test's CA."""
    cert, key = self_signed(tmp_path)
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}
    code = (
        "from pathlib import Path; from rfbatch.emulator import serve, EmulatorConfig; "
        f"serve(EmulatorConfig(api_key={API_KEY!r}, workspace='test-ws', "
        f"state_dir=Path({str(tmp_path / 'emu')!r})))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip().removeprefix("rfbatch emulator listening on ")
        files = {f"clip-{i}.mp4": _VIDEO + bytes([i]) for i in range(2)} if videos else _images(3)
        async with file_server(files) as plain:
            refs = _jsonl([{"name": n, "url": f"{plain}/{n}"} for n in files])
            async with file_server({"refs.jsonl": refs}, tls=(cert, key)) as secure:
                assert secure.startswith("https://")
                extra = ["--videos"] if videos else []
                done = await run_cli(
                    [
                        "ingest",
                        "references",
                        f"{secure}/refs.jsonl",
                        "--batch",
                        "remote",
                        *extra,
                        "--json",
                        "--quiet-seconds",
                        "1",
                    ],
                    cli_env_for(base_url, tmp_path),
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["confirmed"] is True
    assert report["count"] == len(files)
    assert report["expected"] is None  # only the service read the file


def cli_env_for(base_url: str, tmp_path: Path) -> dict[str, str]:
    return run_env(base_url, tmp_path / "state", RFBATCH_UPLOAD__INGEST_POLL_SECONDS="0.05")


async def test_roboql_ingest_builds_and_confirms_a_batch(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = await _ingest(
        emulator, tmp_path, "roboql", "tag:cat", "--batch", "robo", "--json", "--quiet-seconds", "1"
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["confirmed"] is True
    assert report["count"] == 4
    names = sorted(i["name"] for i in batch_items(emulator, "robo"))
    assert names == ["asset-000.png", "asset-003.png", "asset-006.png", "asset-009.png"]
    assert emulator.state()["batches"]["robo"]["displayName"] == "robo"


async def test_new_video_extensions_are_found_by_a_scan(tmp_path: Path) -> None:
    for ext in ("flv", "wmv", "mpeg", "mpg", "3gp", "ogg", "MPG"):
        (tmp_path / "src" / f"clip-{ext}.{ext}").parent.mkdir(exist_ok=True)
        (tmp_path / "src" / f"clip-{ext}.{ext}").write_bytes(_VIDEO)
    (tmp_path / "src" / "song.m4a").write_bytes(b"audio")
    found = [f async for f in iter_scan([SourceSpec(tmp_path / "src")])]
    kinds = {f.path.name: f.kind for f in found if isinstance(f, FoundFile)}
    assert kinds == {
        f"clip-{e}.{e}": "video" for e in ("flv", "wmv", "mpeg", "mpg", "3gp", "ogg", "MPG")
    }
