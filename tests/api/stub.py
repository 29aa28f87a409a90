"""A tiny aiohttp server on 127.0.0.1 for answers the emulator cannot give (bad JSON, odd shapes).

Each test hands it one handler; every request is recorded with its method, path, query, headers
and body so that tests can check exactly what went over the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.serving import serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class StubServer:
    base_url: str
    requests: list[Recorded] = field(default_factory=list)


@asynccontextmanager
async def stub_server(handler: Handler, *, read_body: bool = True) -> AsyncIterator[StubServer]:
    server = StubServer(base_url="")

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read() if read_body else b""
        server.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
            )
        )
        return await handler(request)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", record)
    async with serving(app) as base_url:
        server.base_url = base_url
        yield server


def json_handler(payload: object, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handle
