"""The one way an aiohttp session is opened and held, for the API client and transfers alike."""

from __future__ import annotations

import abc
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import anyio.to_thread

from rfbatch.http.retry import Retrier, RetryHook
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


class SessionHolder(abc.ABC):
    """What the API client and the transfer share: one session and one retry loop.

    The session is either given (the caller keeps it and closes it) or opened by
    :meth:`_open_session` on ``async with`` entry and closed on exit. A call made outside
    ``async with`` is a programming error, not a network fault, hence the plain RuntimeError.
    """

    def __init__(self, session: aiohttp.ClientSession | None, retrier: Retrier) -> None:
        self._session = session
        self._owns_session = session is None
        self._retrier = retrier

    @abc.abstractmethod
    async def _open_session(self) -> aiohttp.ClientSession:
        """A new session fit for this side's traffic (see :func:`open_session`)."""

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = await self._open_session()
            self._owns_session = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def add_retry_hook(self, hook: RetryHook) -> None:
        """Call ``hook`` with a :class:`~rfbatch.http.retry.RetryEvent` before each retry."""
        self._retrier.add_hook(hook)

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            name = type(self).__name__
            raise RuntimeError(f"use {name} as `async with {name}(...) as ...`")
        return self._session
