"""A hostile or broken server: every bad answer ends in one clear error, nothing lands outside.

Each case runs the ``rfbatch`` command a user would, as a subprocess, against
:class:`~tests.reliability.support_b.HostileApi`, and checks the exit code, the one-line error,
that no traceback escaped, and (for exports) every file on disk. In-process coverage of hostile
export names and archives is in ``tests/export/test_export_hostile.py``; these add the CLI,
malformed and endless API answers, lone surrogates, over-long names and FIFO members.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from tests.e2e.support import RFBATCH
from tests.reliability.support_b import (
    SIGNATURE,
    Handler,
    HostileApi,
    as_json,
    batch_metadata,
    endless,
    hostile_env,
    raw,
    running,
)

KEY = "hostile-test-key-5d41402abc4b2a76"
MiB = 1024 * 1024


@pytest.fixture
async def api() -> AsyncIterator[HostileApi]:
    async with running(HostileApi()) as served:
        yield served


async def rfbatch(
    api: HostileApi, tmp_path: Path, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[bytes]:
    env = hostile_env(api.base_url, tmp_path / "state", KEY)
    with anyio.fail_after(timeout):  # a hostile server must not be able to hang rfbatch
        return await anyio.run_process([*RFBATCH, *args], env=env, check=False)


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The ``rfbatch: error:`` line of a failed run; no traceback and no key anywhere."""
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out, out[-3000:]
    assert KEY not in out
    lines = [line for line in out.splitlines() if line.startswith("rfbatch: error: ")]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


# --- malformed answers ---------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000

MALFORMED = [
    pytest.param(
        "workspace",
        raw("<html>gateway</html>", content_type="text/html"),
        ["batch", "list"],
        "workspace: response is not JSON (<html>gateway</html>)",
        id="not-json",
    ),
    pytest.param(
        "workspace",
        raw(b"\xff\xfe{not utf-8"),
        ["batch", "list"],
        "workspace: response is not JSON",
        id="not-utf8",
    ),
    pytest.param(
        "list_batches",
        raw(DEEP),
        ["batch", "list"],
        "list_batches: response is not JSON",
        id="nested-too-deep",
    ),
    pytest.param(
        "list_batches",
        as_json({"batches": [{"batchId": "x"}]}),
        ["batch", "list"],
        "list_batches: unexpected response shape (batches.0.displayName: Field required",
        id="missing-fields",
    ),
    pytest.param(
        "list_batches",
        as_json([1, 2, 3]),
        ["batch", "list"],
        "list_batches: unexpected response shape ((body): Input should be a valid dictionary",
        id="not-an-object",
    ),
    pytest.param(
        "workspace",
        as_json({"workspace": None}),
        ["batch", "list"],
        "workspace: unexpected response shape (workspace: Input should be a valid string",
        id="null-field",
    ),
    pytest.param(
        "count",
        as_json({"count": "lots"}),
        ["batch", "count", "one"],
        "count: unexpected response shape (count: Input should be a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        "count",
        raw('{"count": 1e400}'),
        ["batch", "count", "one"],
        "count: unexpected response shape (count:",
        id="infinite-number",
    ),
    pytest.param(
        "batch",
        # A number would be taken as text; a list cannot be.
        as_json({"batch": {**batch_metadata("one"), "batchType": ["simple"]}}),
        ["batch", "show", "one"],
        "get_batch: unexpected response shape (batch.batchType: Input should be a valid string",
        id="wrong-nested-type",
    ),
]


@pytest.mark.parametrize(("route", "handler", "command", "message"), MALFORMED)
async def test_a_malformed_answer_is_one_clear_error(
    api: HostileApi,
    tmp_path: Path,
    route: str,
    handler: Handler,
    command: list[str],
    message: str,
) -> None:
    api.route(route, handler)

    done = await rfbatch(api, tmp_path, *command)

    assert done.returncode == 3, done.stderr.decode()[-3000:]
    assert message in one_error_line(done)


async def test_a_page_token_repeated_for_ever_stops_the_walk(
    api: HostileApi, tmp_path: Path
) -> None:
    page = {
        "filesMetadata": [{"downloadURL": "http://x/y", "fileName": "a.bin", "contentType": "x"}],
        "nextPageToken": "again",
    }
    api.route("list_files", as_json(page))

    done = await rfbatch(api, tmp_path, "batch", "files", "one", "--json")

    assert done.returncode == 3
    assert "list_files: the server sent a page token it had already sent" in one_error_line(done)
    listings = [r for r in api.requests if "/list" in r]
    assert len(listings) == 2  # the first page, then the repeat: no third request


async def test_empty_pages_with_fresh_tokens_for_ever_stop_the_walk(
    api: HostileApi, tmp_path: Path
) -> None:
    async def fresh_token_every_time(_: web.Request) -> web.StreamResponse:
        return web.json_response({"batches": [], "nextPageToken": uuid.uuid4().hex})

    api.route("list_batches", fresh_token_every_time)

    done = await rfbatch(api, tmp_path, "batch", "list", "--json")

    assert done.returncode == 3
    assert "list_batches: the server sent 100 empty pages in a row" in one_error_line(done)
    assert len([r for r in api.requests if r.split("?")[0].endswith("/batches")]) == 100


async def test_an_endless_answer_is_cut_off_at_the_cap(api: HostileApi, tmp_path: Path) -> None:
    api.route("list_batches", endless())

    done = await rfbatch(api, tmp_path, "batch", "list")

    assert done.returncode == 3
    line = one_error_line(done)
    assert f"list_batches: response body is larger than {64 * MiB} bytes" in line


async def test_an_endless_error_body_is_read_only_in_part(api: HostileApi, tmp_path: Path) -> None:
    async def endless_error(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=400, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"error": "you asked for it", "pad": "')
        try:
            while True:
                await resp.write(b"x" * MiB)
        except ConnectionError:
            pass
        return resp

    api.route("count", endless_error)

    done = await rfbatch(api, tmp_path, "batch", "count", "one")

    assert done.returncode == 3
    line = one_error_line(done)
    assert line.startswith("rfbatch: error: HTTP 400: count: ")
    assert len(line) < 1000


async def test_a_server_string_that_is_not_unicode_is_shown_not_crashed_on(
    api: HostileApi, tmp_path: Path
) -> None:
    batch = {**batch_metadata("one"), "displayName": "bad\ud800name"}
    api.route("list_batches", as_json({"batches": [batch]}))

    done = await rfbatch(api, tmp_path, "batch", "list")

    assert "Traceback" not in done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0
    assert b"one" in done.stdout


# --- hostile names and archives, through `rfbatch export` -------------------------------------


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


async def test_hostile_names_and_archives_are_refused_by_rfbatch_export(
    api: HostileApi, tmp_path: Path
) -> None:
    escape = f"rfbatch-escape-{uuid.uuid4().hex}"
    good = {"ok.bin": b"fine", "sub/dir/ok2.bin": b"nested fine"}
    hostile_names = {
        "../up.bin": "'..' in path",
        f"/tmp/{escape}.bin": "absolute path",
        "nul\x00byte.bin": "control character",
        "sub/../../up2.bin": "'..' in path",
        "bad\ud800surrogate.bin": "not valid Unicode",
        "x" * 300 + ".bin": "over 255 bytes",
        "": "empty name",
    }
    archives = {
        "dotdot.tar": (tar_of((member(f"../{escape}.txt"), b"up")), "'..' in path"),
        "absolute.tar": (tar_of((member(f"/tmp/{escape}.txt"), b"abs")), "absolute path"),
        "symlink.tar": (
            tar_of((member("link", tarfile.SYMTYPE, "/etc/passwd"), None)),
            "symbolic link",
        ),
        "hardlink.tar": (
            tar_of((member("a.txt"), b"a"), (member("hard", tarfile.LNKTYPE, "a.txt"), None)),
            "hard link",
        ),
        "device.tar": (tar_of((member("dev", tarfile.CHRTYPE), None)), "device"),
        "fifo.tar": (tar_of((member("pipe", tarfile.FIFOTYPE), None)), "FIFO"),
    }
    safe = tar_of((member("from-tar/a.txt"), b"A"), (member("from-tar/b.txt"), b"B"))
    api.files = [
        *good.items(),
        *((name, b"hostile") for name in hostile_names),
        *((name, data) for name, (data, _) in archives.items()),
        ("safe.tar", safe),
    ]
    api.page_size = 3
    out = tmp_path / "out"

    done = await rfbatch(api, tmp_path, "export", "one", "--output", str(out), "--json")

    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr[stderr.find("Traceback") :][-3000:]
    assert KEY not in stderr
    assert SIGNATURE not in stderr + done.stdout.decode("utf-8", "replace")
    assert done.returncode == 1, stderr[-3000:]
    assert files_under(out) == {**good, "from-tar/a.txt": b"A", "from-tar/b.txt": b"B"}
    # Nothing anywhere else: only the output and the state folders were written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "state"]
    assert not list(Path("/tmp").glob(f"{escape}*"))
    report = json.loads(done.stdout)
    [batch] = report if isinstance(report, list) else report["batches"]
    # A name that is not valid Unicode is given readably and, exactly, in base64 beside it.
    failed = {
        base64.b64decode(f["file_base64"]).decode("utf-8", "surrogatepass")
        if "file_base64" in f
        else f["file"]: f["reason"]
        for f in batch["failed"]
    }
    expected = {**hostile_names, **{n: why for n, (_, why) in archives.items()}}
    assert set(failed) == set(expected)
    for name, why in expected.items():
        assert why in failed[name], (name, failed[name])
