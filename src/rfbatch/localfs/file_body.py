"""A single file (a video) streamed from disk as a request body, only as the scan saw it.

:class:`FileBody` has what :class:`rfbatch.transfer.BodySource` asks for (a ``length`` and a
``chunks()`` that starts over on every call, for a retried or refreshed PUT), so the transfer
layer streams it without knowing about the disk. Every pass reads through
:class:`~rfbatch.localfs.reading.CheckedFile`: a file that changed since the scan, or while it
was read, raises :class:`~rfbatch.errors.FileChangedError` before its last chunk is yielded.
Chunks are read into reused buffers (:class:`~rfbatch.localfs.reading.ReadBuffers`, its own or
shared): a chunk is a view of one, valid while the consumer holds it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from rfbatch.localfs.reading import READ_CHUNK_SIZE, CheckedFile, ReadBuffers

T = TypeVar("T")


class FileBody:
    """The file at ``path``, which must still have the ``size``, ``mtime_ns`` and ``inode`` the
    caller saw (the manifest's row), streamed ``chunk_size`` bytes at a time.

    Reads run in worker threads; pass ``limiter`` to bound how many run at once, and
    ``buffers`` (of ``chunk_size``) to read into buffers shared with other bodies.
    """

    def __init__(
        self,
        path: Path | str,
        chunk_size: int = READ_CHUNK_SIZE,
        *,
        size: int,
        mtime_ns: int,
        inode: int | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        buffers: ReadBuffers | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if buffers is not None and buffers.size != chunk_size:
            raise ValueError("shared buffers must be chunk_size bytes")
        self._buffers = buffers
        self.path = Path(path)
        self.size = size
        self.mtime_ns = mtime_ns
        self.inode = inode
        self._chunk_size = chunk_size
        self._limiter = limiter

    def __repr__(self) -> str:
        return f"<FileBody {self.path} {self.size} bytes>"

    @property
    def length(self) -> int:
        return self.size

    async def _run(self, func: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(func, limiter=self._limiter)

    async def chunks(self) -> AsyncGenerator[memoryview, None]:
        opening = partial(CheckedFile, self.path, self.size, self.mtime_ns, self.inode)
        file = await self._run(opening)
        buffers = self._buffers or ReadBuffers(min(self._chunk_size, max(1, self.size)))
        try:
            while file.remaining:
                yield await self._run(partial(_read_chunk, file, buffers))
        finally:
            with anyio.CancelScope(shield=True):
                await self._run(file.close)


def _read_chunk(file: CheckedFile, buffers: ReadBuffers) -> memoryview:
    """The next chunk of ``file``, read into a buffer nothing else views (full but the last)."""
    with buffers.take() as whole:
        filled = 0
        while file.remaining and filled < len(whole):
            filled += file.readinto(whole[filled:])
        return whole[:filled]
