"""Helpers for the bad-input, hostile-server and secrets tests.

* :class:`HostileApi`: a scriptable stand-in for the Roboflow API on 127.0.0.1 (plain or TLS).
  Each route answers like the contract until a test replaces it with a handler of its own, so
  one server can send malformed JSON, missing fields, looping page tokens, endless bodies or
  hostile file names.
* :func:`without_file_permissions`: run a command with file permissions enforced even as root.
* :func:`run_in_pty`: run a command on a pseudo-terminal, as a person at a terminal would.
* :func:`self_signed`: a certificate and key made with the ``openssl`` command.
* :func:`manifest_files`: the manifest's ``files`` rows, read straight from SQLite.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import sqlite3
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.e2e.support import RFBATCH, run_env
from tests.serving import serving

WORKSPACE = "hostile-ws"
SIGNATURE = "aG9zdGlsZS1zaWduYXR1cmUtbmV2ZXItbGVhaw"
STAGING = f"/data-staging/v1/external/{WORKSPACE}"
JOBS = f"/batch-processing/v1/external/{WORKSPACE}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def batch_metadata(batch_id: str, batch_type: str = "sharded-batch") -> dict[str, Any]:
    return {
        "displayName": batch_id,
        "batchId": batch_id,
        "batchType": batch_type,
        "batchContentType": "mixed",
        "createdDate": "2026-01-01T00:00:00Z",
        "expiryDate": "2026-01-08T00:00:00Z",
    }


def raw(body: bytes | str, status: int = 200, content_type: str = "application/json") -> Handler:
    """A handler answering ``body`` verbatim."""
    data = body.encode() if isinstance(body, str) else body

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(body=data, status=status, content_type=content_type)

    return handler


def as_json(obj: Any, status: int = 200) -> Handler:
    return raw(json.dumps(obj), status)


def endless(prefix: bytes = b'{"batches": [') -> Handler:
    """A chunked 200 answer that never ends: ``prefix`` and then spaces, for ever."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(prefix)
        filler = b" " * (1 << 20)
        with contextlib.suppress(ConnectionError):
            while True:
                await resp.write(filler)
        return resp

    return handler


@dataclass
class HostileApi:
    """The endpoints an export, a listing and a job status use, each replaceable.

    ``files`` is what ``/list`` lists (``page_size`` per page) and ``/dl/<i>`` serves; every
    request's path and query are kept in ``requests``.
    """

    files: list[tuple[str, bytes]] = field(default_factory=list)
    page_size: int = 100
    handlers: dict[str, Handler] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def route(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def _dispatch(self, name: str, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        override = self.handlers.get(name)
        if override is not None:
            return await override(request)
        default: Handler = getattr(self, f"_{name}")
        return await default(request)

    async def _workspace(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"workspace": WORKSPACE, "status": "ok"})

    async def _list_batches(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"batches": [batch_metadata("one")], "nextPageToken": None})

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"batch": batch_metadata(request.match_info["batch"])})

    async def _count(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"count": len(self.files), "status": "ok"})

    async def _parts(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"batchParts": []})

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        start = int(request.query.get("nextPageToken") or 0)
        end = min(start + self.page_size, len(self.files))
        page = [
            {
                "downloadURL": f"{self.base_url}/dl/{i}?X-Goog-Signature={SIGNATURE}",
                "fileName": name,
                "contentType": "application/octet-stream",
            }
            for i, (name, _) in enumerate(self.files[start:end], start)
        ]
        token = str(end) if end < len(self.files) else None
        return web.json_response({"filesMetadata": page, "nextPageToken": token})

    async def _shards(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"shards": [], "nextPageToken": None})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        index = int(request.match_info["index"])
        return web.Response(body=self.files[index][1])

    def app(self) -> web.Application:
        app = web.Application()

        def add(name: str, path: str) -> None:
            async def view(request: web.Request) -> web.StreamResponse:
                return await self._dispatch(name, request)

            app.router.add_get(path, view)

        add("workspace", "/")
        add("list_batches", f"{STAGING}/batches")
        add("batch", f"{STAGING}/batches/{{batch}}")
        add("count", f"{STAGING}/batches/{{batch}}/count")
        add("parts", f"{STAGING}/batches/{{batch}}/parts")
        add("list_files", f"{STAGING}/batches/{{batch}}/list")
        add("shards", f"{STAGING}/batches/{{batch}}/shards")
        add("download", "/dl/{index}")
        return app


@asynccontextmanager
async def running(
    api: HostileApi, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[HostileApi]:
    """Serve ``api`` on 127.0.0.1 (TLS with ``ssl_context``); ``api.base_url`` says where."""
    async with serving(api.app(), ssl_context=ssl_context) as base_url:
        api.base_url = base_url
        yield api


def hostile_env(base_url: str, state_dir: Path, api_key: str) -> dict[str, str]:
    # A hostile answer is not transient: these keep the runs that do retry short.
    return run_env(
        base_url,
        state_dir,
        api_key=api_key,
        RFBATCH_API__RETRY_ATTEMPTS="2",
        RFBATCH_API__RETRY_TIMEOUT="5",
    )


# --- certificates --------------------------------------------------------------------------


def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (as a subjectAltName) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=IP:{host}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


# --- processes -----------------------------------------------------------------------------


def without_file_permissions(argv: Sequence[str]) -> list[str] | None:
    """``argv`` run so that file modes bind it, or ``None`` when that cannot be arranged.

    Root reads a mode-000 file anyway (CAP_DAC_OVERRIDE). Dropping that capability and
    CAP_DAC_READ_SEARCH with ``setpriv`` keeps uid 0, so everything root owns stays reachable
    through its owner bits, while a mode-000 file is refused as it would be to any user.
    """
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


def run_in_pty(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = 120.0, columns: int = 120
) -> tuple[int, str]:
    """Run ``rfbatch ARGS`` with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide.

    Returns the exit code and everything written to the terminal. Blocking: call it through
    ``anyio.to_thread.run_sync`` when an emulator runs on the test's loop.
    """
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*RFBATCH, *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns)},
            close_fds=True,
        )
    finally:
        os.close(secondary)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rfbatch {' '.join(args)} did not finish in {timeout} s")
            ready, _, _ = select.select([primary], [], [], 0.1)
            if not ready:
                if proc.poll() is not None and not _readable(primary):
                    break
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    return code, out.decode("utf-8", "replace")


def _readable(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


# --- the manifest --------------------------------------------------------------------------


def manifest_files(state_dir: Path) -> dict[str, tuple[str, str | None]]:
    """``{path: (state, last_error)}`` of every file row (paths decoded as rfbatch does)."""
    conn = sqlite3.connect(state_dir / "manifest.sqlite3")
    try:
        rows = conn.execute("SELECT path, state, last_error FROM files").fetchall()
    finally:
        conn.close()
    out: dict[str, tuple[str, str | None]] = {}
    for path, state, error in rows:
        key = path.decode("utf-8", "surrogatepass") if isinstance(path, bytes) else path
        out[key] = (state, error)
    return out


def state_bytes(state_dir: Path) -> bytes:
    """Every byte of the state folder's files (database, WAL, lock), for grepping."""
    return b"".join(p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file())
