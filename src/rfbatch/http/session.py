"""The one way an aiohttp session is opened, for the API client and for transfers alike."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anyio.to_thread

from rfbatch.http.tls import tls_context


def client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """Connect and read timeouts but no total one: a large body takes as long as it takes,
    while a dead peer is still noticed."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


async def open_session(
    *,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int,
    ca_bundle: Path | None,
    storage: bool = False,
) -> aiohttp.ClientSession:
    """A session that verifies TLS (trusting ``ca_bundle`` too) over at most ``max_connections``.

    A ``storage`` session keeps bodies as stored (a transparently decoded body would fail the
    length check) and keeps no cookies (a signed URL is all the authority a transfer has).
    """
    # Reading the CA bundle blocks: do it off the event loop.
    ssl_arg = await anyio.to_thread.run_sync(tls_context, ca_bundle)
    connector = aiohttp.TCPConnector(limit=max_connections, ssl=ssl_arg)
    timeout = client_timeout(connect_timeout, read_timeout)
    if storage:
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
    return aiohttp.ClientSession(connector=connector, timeout=timeout)
