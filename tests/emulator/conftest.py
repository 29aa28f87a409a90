"""Fixtures for the emulator tests: raw aiohttp clients, a webhook receiver, a file server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web

from rfbatch.emulator import Emulator
from tests.emulator.support import Api, FileServer, Receiver
from tests.serving import serving

Served = TypeVar("Served", Receiver, FileServer)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def api(emulator: Emulator, http: aiohttp.ClientSession) -> Api:
    return Api(emulator, http)


async def _serve(server: Served, method: str, route: str, url_path: str) -> AsyncIterator[Served]:
    """Serve ``server.handle`` at ``route`` on 127.0.0.1 while the fixture lasts.

    ``server.url`` is set to ``url_path`` on the server's address.
    """
    app = web.Application()
    app.router.add_route(method, route, server.handle)
    async with serving(app) as base_url:
        server.url = f"{base_url}{url_path}"
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for rec in _serve(Receiver(), "POST", "/hook", "/hook"):
        yield rec


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    async for server in _serve(FileServer(), "GET", "/files/{name}", "/files"):
        yield server
