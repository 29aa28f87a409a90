"""Hand a request body from the event loop to a blocking consumer in a worker thread.

Bodies can be gigabytes, so they are never held whole: the loop reads chunks off the socket and
sends them through a small bounded stream; a worker thread pulls them with a file-like
:class:`PipeReader` (which :mod:`tarstream` reads forward-only) and hashes or writes them.
The bounded stream is the backpressure: a slow disk slows the socket reads, not the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TypeVar

import anyio
from aiohttp import StreamReader
from anyio import CapacityLimiter
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")

CHUNK = 1024 * 1024
_BUFFERED_CHUNKS = 4


class PipeAbortedError(Exception):
    """The producer stopped before the end of the body (client gone, injected reset)."""


class PipeReader:
    """The thread side of the pipe: a minimal binary file object."""

    def __init__(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._receive = receive
        self._chunk = b""
        self._pos = 0
        self._eof = False
        self.aborted = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            self._chunk = anyio.from_thread.run(self._receive.receive)
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._eof = True
            if self.aborted:
                raise PipeAbortedError("request body ended early") from None
            return False
        self._pos = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts: list[bytes] = []
            while True:
                piece = self.read(CHUNK)
                if not piece:
                    return b"".join(parts)
                parts.append(piece)
        while self._pos >= len(self._chunk):
            if not self._fill():
                return b""
        piece = self._chunk[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece

    def drain(self) -> None:
        """Swallow the rest of the body so the producer never blocks on a full stream."""
        try:
            while self.read(CHUNK):
                pass
        except PipeAbortedError:
            pass

    def run(self, consumer: Callable[[PipeReader], T]) -> T:
        try:
            return consumer(self)
        finally:
            self.drain()


async def feed_thread(
    source: AsyncIterable[bytes],
    consumer: Callable[[PipeReader], T],
    *,
    limiter: CapacityLimiter,
) -> T:
    """Run ``consumer`` in a worker thread on the bytes of ``source``; return what it returns.

    If ``source`` raises, the consumer sees :class:`PipeAbortedError` on its next read and the
    source's exception propagates; a consumer exception propagates too.
    """
    send, receive = anyio.create_memory_object_stream[bytes](_BUFFERED_CHUNKS)
    reader = PipeReader(receive)
    result: list[T] = []

    async def consume() -> None:
        with receive:
            result.append(await anyio.to_thread.run_sync(reader.run, consumer, limiter=limiter))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            with send:
                try:
                    async for chunk in source:
                        await send.send(chunk)
                except BaseException:
                    reader.aborted = True
                    raise
    except BaseExceptionGroup as group:
        raise _first(group) from None
    return result[0]


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most telling exception of a group: anything before a cancellation."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for exc in flat:
        if not isinstance(exc, PipeAbortedError | anyio.get_cancelled_exc_class()):
            return exc
    return flat[0]


async def coalesced(content: StreamReader, limit: int | None = None) -> AsyncIterator[bytes]:
    """Chunks of about :data:`CHUNK` bytes from an aiohttp body (at most ``limit`` bytes)."""
    # Pieces are kept as they arrive and joined once per chunk: one copy, not two (a bytearray
    # would copy each piece in and the whole chunk out again).
    pieces: list[bytes] = []
    size = 0
    taken = 0
    async for piece in content.iter_any():
        if limit is not None and taken + len(piece) > limit:
            piece = piece[: limit - taken]
        taken += len(piece)
        pieces.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield b"".join(pieces)
            pieces.clear()
            size = 0
        if limit is not None and taken >= limit:
            break
    if pieces:
        yield b"".join(pieces)
