"""Fixtures for the emulator tests: raw aiohttp clients, a webhook receiver, a file server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from rfbatch.emulator import Emulator
from tests.emulator.support import Api, FileServer, Receiver

Handler = Callable[[web.Request], Awaitable[web.Response]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def api(emulator: Emulator, http: aiohttp.ClientSession) -> Api:
    return Api(emulator, http)


async def _serve(method: str, path: str, handler: Handler) -> AsyncIterator[str]:
    """Serve one route on 127.0.0.1 for the duration of the fixture; yields the base URL."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async for base in _serve("POST", "/hook", rec.handle):
        rec.url = f"{base}/hook"
        yield rec


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    server = FileServer()
    async for base in _serve("GET", "/files/{name}", server.handle):
        server.url = f"{base}/files"
        yield server
