"""A storage host whose TLS certificate nobody trusts, and an API front that sends transfers there.

The emulator hands out signed URLs on its own origin. :func:`api_front` passes every API call
through to it and rewrites that origin, in the answers, to the untrusted host: the API stays plain
HTTP (and so trusted), while every PUT and download meets a certificate that fails verification.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
from aiohttp import web
from yarl import URL

from tests.reliability.support_b import self_signed, server_context

# Hop-by-hop or recomputed headers: the front sets its own.
_DROPPED = {"host", "content-length", "transfer-encoding", "accept-encoding", "connection"}


@dataclass
class UntrustedStorage:
    """``origin`` is ``https://127.0.0.1:PORT``; ``cert`` would trust it as a CA bundle."""

    origin: str = ""
    cert: Path = Path()
    requests: list[str] = field(default_factory=list)


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, port


@asynccontextmanager
async def untrusted_storage(folder: Path) -> AsyncIterator[UntrustedStorage]:
    """A TLS server with a self-signed certificate that answers any request with 200."""
    cert, key = await anyio.to_thread.run_sync(self_signed, folder)
    storage = UntrustedStorage(cert=cert)

    async def anything(request: web.Request) -> web.Response:
        await request.read()
        storage.requests.append(request.path)
        return web.Response(body=b"stored")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner, port = await _serve(app, server_context(cert, key))
    storage.origin = f"https://127.0.0.1:{port}"
    try:
        yield storage
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api_front(api_url: str, storage_origin: str) -> AsyncIterator[str]:
    """The base URL of a pass-through to ``api_url`` whose answers point at ``storage_origin``."""
    upstream = str(URL(api_url).origin())

    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
            async with session.request(
                request.method,
                URL(upstream + request.raw_path, encoded=True),
                data=await request.read() or None,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type",)}
            body = body.replace(upstream.encode(), storage_origin.encode())
            return web.Response(status=resp.status, body=body, headers=kept)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner, port = await _serve(app)
        try:
            yield f"http://127.0.0.1:{port}{URL(api_url).raw_path.rstrip('/')}"
        finally:
            await runner.cleanup()
