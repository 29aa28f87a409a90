"""Request bodies of known length that can be streamed again from the start.

A signed-URL PUT must announce its Content-Length up front and may have to be resent after a
refresh or a transient failure, so a body is a length plus a ``chunks()`` method that starts
over on every call (:class:`BodySource`). Bodies read from disk (a tar shard, a video) are built
by :mod:`rfbatch.localfs`, which has the same shape; this layer only streams them. Those yield
views of buffers they reuse once nothing views them any more, so a consumer may keep a chunk
as long as it likes, but copies nothing it does not need to.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, runtime_checkable

# Bytes per chunk of an in-memory body, and the default per write of a download to disk.
CHUNK_SIZE = 1024 * 1024


@runtime_checkable
class BodySource(Protocol):
    """A body of exactly ``length`` bytes; each ``chunks()`` call streams it from the start."""

    @property
    def length(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes | memoryview]: ...


class BytesBody:
    """A body already in memory (small: a single image, a test payload)."""

    def __init__(self, data: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self._data = data
        self._chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"<BytesBody {len(self._data)} bytes>"

    @property
    def length(self) -> int:
        return len(self._data)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        view = memoryview(self._data)
        for start in range(0, len(view), self._chunk_size):
            yield bytes(view[start : start + self._chunk_size])
