"""Open a file as the scan saw it, read it, and prove it did not change.

Files are sent while cameras and copy jobs may still be writing them, so a file is read only
if it is still what the scan recorded (size, mtime and inode) when it is opened, and is proven
unchanged, with its path still naming it, before its last byte is handed out. A file that moved
raises :class:`~rfbatch.errors.FileChangedError` (it is re-queued and sent whole by a later
pass, never half-written); one that cannot be opened or read raises
:class:`~rfbatch.errors.FileUnreadableError`. Both request bodies that read local files (the tar
shards and the videos) read through :class:`CheckedFile`. Whether a file recorded earlier is
worth offering again (a failed upload retried, a file resumed or adopted) is
:func:`still_as_recorded`. Blocking: run it in a worker thread.

Bodies read into :class:`ReadBuffers`: a few buffers reused chunk after chunk, each only once
nothing holds a view of it any more (one set per body, or one shared by all the uploads). A
fresh ``bytes`` per read would cost more than the read: above glibc's mmap threshold (see
:mod:`rfbatch.allocator`) every such block is new pages, each faulted in and zeroed by the
kernel, then unmapped, for every byte sent.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from collections import deque
from pathlib import Path

from rfbatch.errors import FileChangedError, FileUnreadableError
from rfbatch.media import FoundFile

# Bytes read from disk at a time: large enough that a worker-thread hand-off per read is cheap,
# small enough that many concurrent bodies stay within memory.
READ_CHUNK_SIZE = 1 << 20
# Buffers a body keeps: the chunk being filled, the one the HTTP client still holds while it
# asks for the next, and one whose tail the transport may not have sent yet.
KEPT_BUFFERS = 3


def still_as_recorded(found: FoundFile) -> bool:
    """Whether ``found`` is still on disk as it was recorded: the same size and mtime.

    The rule that decides whether a file recorded earlier is offered again unchanged; one that
    moved (or is gone) is left for the scan to find again.
    """
    try:
        st = os.stat(found.location)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (found.size, found.mtime_ns)


class CheckedFile:
    """A regular file opened for reading that was, when opened, the file the scan saw.

    ``size`` is the length the scan saw. ``mtime_ns`` and ``inode``, when known, must also be
    what it saw (an inode of 0, as file systems without stable inodes report, is not
    compared): the inode catches a file swapped for a copy, or for a link to some other file,
    that kept the size and mtime. :meth:`readinto` reads the bytes in order into the caller's
    buffers; the call that reads the last of them first proves that the file did not change
    while it was read (an empty file is proven when it is opened), so a changed file never
    yields its last byte.
    """

    def __init__(
        self, path: Path, size: int, mtime_ns: int | None = None, inode: int | None = None
    ) -> None:
        self.path = path
        self.remaining = size
        """Bytes not read yet: read while this is not zero."""
        self._name = str(path)
        self._fd, self._opened = _open_regular(path)
        try:
            _check(self._name, "since it was scanned", self._opened, size, mtime_ns, inode or None)
            if size == 0:
                self._prove_unchanged()
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> CheckedFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def readinto(self, buffer: memoryview) -> int:
        """Read the next bytes into ``buffer`` (no more than :attr:`remaining`, which must not
        be 0) and return how many: at least one, fewer than asked only on a short read."""
        try:
            n = os.readv(self._fd, [buffer[: self.remaining]])
        except OSError as exc:
            raise FileUnreadableError(self._name, _reason(exc)) from exc
        if not n:
            raise FileChangedError(self._name, "shrank while it was read")
        self.remaining -= n
        if not self.remaining:
            # Checked before the last bytes leave, so a changed file never completes.
            self._prove_unchanged()
        return n

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _fstat(self) -> os.stat_result:
        try:
            return os.fstat(self._fd)
        except OSError as exc:
            raise FileUnreadableError(self._name, _reason(exc)) from exc

    def _prove_unchanged(self) -> None:
        now = self._fstat()
        opened = self._opened
        _check(self._name, "while it was read", now, opened.st_size, opened.st_mtime_ns, None)
        # The open file is unchanged; the path must still name it, or what was read is a file
        # that was renamed over or removed meanwhile.
        try:
            named = os.stat(self.path)
        except FileNotFoundError as exc:
            raise FileChangedError(self._name, "removed while it was read") from exc
        except OSError as exc:
            raise FileUnreadableError(self._name, _reason(exc)) from exc
        if (named.st_dev, named.st_ino) != (now.st_dev, now.st_ino):
            raise FileChangedError(self._name, "replaced while it was read")


def _check(
    name: str, when: str, st: os.stat_result, size: int, mtime_ns: int | None, inode: int | None
) -> None:
    """Raise :class:`FileChangedError` saying how ``st`` differs from what was expected."""
    if st.st_size != size:
        change = "grew" if st.st_size > size else "shrank"
        raise FileChangedError(name, f"{change} {when} (size is {st.st_size}, expected {size})")
    if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
        raise FileChangedError(
            name, f"modified {when} (mtime_ns is {st.st_mtime_ns}, expected {mtime_ns})"
        )
    if inode is not None and st.st_ino != inode:
        raise FileChangedError(name, f"replaced {when} (inode is {st.st_ino}, expected {inode})")


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading, refusing anything but a regular file: its descriptor, and its
    status as opened.

    Opened non-blocking: a plain ``open`` of a FIFO waits for a writer forever, and a file
    swapped for one after the scan would hang its worker thread beyond any cancellation.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileUnreadableError(str(path), _reason(exc)) from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise FileUnreadableError(str(path), "not a regular file")
        # Blocking again, in one call: of the status flags F_SETFL sets, only O_NONBLOCK was on.
        fcntl.fcntl(fd, fcntl.F_SETFL, 0)
    except OSError as exc:
        os.close(fd)
        raise FileUnreadableError(str(path), _reason(exc)) from exc
    except BaseException:
        os.close(fd)
        raise
    # A bare descriptor: read with os.read/os.readv, without a file object (and its own fstat).
    return fd, opened


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class ReadBuffers:
    """Read buffers of ``size`` bytes, each reused once nothing views it; safe to share between
    bodies read in different threads.

    A chunk handed on may still be referenced after its write returned: the HTTP client holds it
    while it asks for the next one, and a transport that could not send it whole keeps a view of
    the rest. Writing into it then would change bytes not yet sent. A ``bytearray`` knows: it
    refuses to change size (``BufferError``) while any view of it exists, however derived. So a
    buffer is taken again only when that test passes, and :meth:`take` hands out a view, which
    marks it taken until that view and every view made from it are gone. When none of the kept
    buffers is free a new one is made; beyond ``keep``, the oldest is left to whoever still holds
    it (freed when they let it go), so what is kept stays bounded while a slow link holds many.
    """

    def __init__(self, size: int, keep: int = KEPT_BUFFERS) -> None:
        if size < 1 or keep < 1:
            raise ValueError("buffer size and count must be positive")
        self.size = size
        self._keep = keep
        self._buffers: deque[bytearray] = deque()
        self._lock = threading.Lock()
        self.made = 0
        """Buffers allocated so far (a count that keeps growing means they are never free)."""

    def take(self) -> memoryview:
        """A view of a whole buffer nobody else views, oldest first (the likeliest to be free)."""
        with self._lock:
            for _ in range(len(self._buffers)):
                buffer = self._buffers.popleft()
                self._buffers.append(buffer)
                if _unviewed(buffer):
                    return memoryview(buffer)
            buffer = bytearray(self.size)
            self.made += 1
            self._buffers.append(buffer)
            if len(self._buffers) > self._keep:
                self._buffers.popleft()
            return memoryview(buffer)


def _unviewed(buffer: bytearray) -> bool:
    """Whether no view of ``buffer`` exists: a resize succeeds only then (its last byte, which
    the next fill writes again, is zeroed). Shrunk first, so it never reallocates."""
    try:
        del buffer[-1]
    except BufferError:
        return False
    buffer.append(0)
    return True
