"""Request bodies of known length that can be streamed again from the start.

A signed-URL PUT must announce its Content-Length up front and may have to be resent after a
refresh or a transient failure, so a body is a length plus a ``chunks()`` method that starts
over on every call. :class:`FileBody` reads from disk in a worker thread, one chunk at a time,
and refuses to send a file that changed while it was read: a half-written file is never sent.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar, runtime_checkable

import anyio
from anyio import CapacityLimiter

from rfbatch.errors import FileChangedError, FileUnreadableError
from rfbatch.localfs.archive import open_regular

CHUNK_SIZE = 1024 * 1024
T = TypeVar("T")


@runtime_checkable
class BodySource(Protocol):
    """A body of exactly ``length`` bytes; each ``chunks()`` call streams it from the start."""

    @property
    def length(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


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


class FileBody:
    """A file streamed from disk, checked against the size and mtime it is expected to have.

    ``size`` and ``mtime_ns`` are what the caller saw when it decided to send the file (the
    manifest's row); :meth:`open` stats the file for callers that have no such record. Every
    pass re-checks them before the first byte and again before the last chunk is handed over,
    and also checks that the path still names the same file.
    """

    def __init__(
        self,
        path: Path | str,
        chunk_size: int = CHUNK_SIZE,
        *,
        size: int,
        mtime_ns: int,
        inode: int | None = None,
        limiter: CapacityLimiter | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.path = Path(path)
        self.size = size
        self.mtime_ns = mtime_ns
        self.inode = inode
        self._chunk_size = chunk_size
        self._limiter = limiter

    @classmethod
    async def open(
        cls,
        path: Path | str,
        chunk_size: int = CHUNK_SIZE,
        *,
        limiter: CapacityLimiter | None = None,
    ) -> FileBody:
        """A body for ``path`` as it is now (stat taken in a worker thread)."""
        target = Path(path)

        def stat() -> os.stat_result:
            try:
                st = target.stat()
            except OSError as exc:
                raise FileUnreadableError(str(target), exc.strerror or type(exc).__name__) from exc
            if not target.is_file():
                raise FileUnreadableError(str(target), "not a regular file")
            return st

        st = await anyio.to_thread.run_sync(stat, limiter=limiter)
        return cls(target, chunk_size, size=st.st_size, mtime_ns=st.st_mtime_ns, limiter=limiter)

    def __repr__(self) -> str:
        return f"<FileBody {self.path} {self.size} bytes>"

    @property
    def length(self) -> int:
        return self.size

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def _unreadable(self, exc: OSError) -> FileUnreadableError:
        return FileUnreadableError(str(self.path), exc.strerror or type(exc).__name__)

    def _check_stat(self, st: os.stat_result, when: str) -> None:
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise FileChangedError(
                str(self.path),
                f"changed {when} (size {self.size} -> {st.st_size}, "
                f"mtime_ns {self.mtime_ns} -> {st.st_mtime_ns})",
            )

    def _open_checked(self) -> BinaryIO:
        # Non-blocking and regular files only: a FIFO swapped in must not hang the thread.
        fh = open_regular(self.path)
        try:
            st = os.fstat(fh.fileno())
            self._check_stat(st, "since it was seen")
            if self.inode is not None and st.st_ino != self.inode:
                # Same size and mtime but another file (e.g. swapped for a link): never send it.
                raise FileChangedError(str(self.path), "replaced by another file since it was seen")
        except BaseException:
            fh.close()
            raise
        return fh

    def _read(self, fh: BinaryIO, n: int) -> bytes:
        try:
            return fh.read(n)
        except OSError as exc:
            raise self._unreadable(exc) from exc

    def _check_after(self, fh: BinaryIO) -> None:
        try:
            grown = fh.read(1)
            st = os.fstat(fh.fileno())
            now = self.path.stat()
        except FileNotFoundError as exc:
            raise FileChangedError(str(self.path), "removed while it was read") from exc
        except OSError as exc:
            raise self._unreadable(exc) from exc
        if grown:
            raise FileChangedError(str(self.path), "grew while it was read")
        self._check_stat(st, "while it was read")
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise FileChangedError(str(self.path), "replaced while it was read")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        fh = await self._run(self._open_checked)
        try:
            remaining = self.size
            if remaining == 0:
                await self._run(self._check_after, fh)
            while remaining > 0:
                data = await self._run(self._read, fh, min(self._chunk_size, remaining))
                if not data:
                    raise FileChangedError(str(self.path), "shrank while it was read")
                remaining -= len(data)
                if remaining == 0:
                    # Checked before the last chunk leaves, so a changed file never completes.
                    await self._run(self._check_after, fh)
                yield data
        finally:
            with anyio.CancelScope(shield=True):
                await self._run(fh.close)
