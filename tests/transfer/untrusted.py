"""A storage host whose TLS certificate nobody trusts, and an API front that sends transfers there.

The emulator hands out signed URLs on its own origin. :func:`api_front` passes every API call
through to it and rewrites that origin, in the answers, to the untrusted host: the API stays plain
HTTP (and so trusted), while every PUT and download meets a certificate that fails verification.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
from aiohttp import web
from yarl import URL

from tests.reliability.support_b import self_signed, server_context
from tests.serving import serving

# Hop-by-hop or recomputed headers: the front sets its own.
_DROPPED = {"host", "content-length", "transfer-encoding", "accept-encoding", "connection"}


@dataclass
class UntrustedStorage:
    """``origin`` is ``https://127.0.0.1:PORT``; ``cert`` would trust it as a CA bundle."""

    origin: str = ""
    cert: Path = Path()
    requests: list[str] = field(default_factory=list)


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
    async with serving(app, ssl_context=server_context(cert, key)) as origin:
        storage.origin = origin
        yield storage


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
        async with serving(app) as base_url:
            yield f"{base_url}{URL(api_url).raw_path.rstrip('/')}"
