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
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from rfbatch.errors import FileChangedError, FileUnreadableError
from rfbatch.media import FoundFile

# Bytes read from disk at a time: large enough that a worker-thread hand-off per read is cheap,
# small enough that many concurrent bodies stay within memory.
READ_CHUNK_SIZE = 1 << 20


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
    that kept the size and mtime. :meth:`read` hands out the bytes in order; the call that
    returns the last of them first proves that the file did not change while it was read (an
    empty file is proven when it is opened), so a changed file never yields its last byte.
    """

    def __init__(
        self, path: Path, size: int, mtime_ns: int | None = None, inode: int | None = None
    ) -> None:
        self.path = path
        self.remaining = size
        """Bytes not read yet: read while this is not zero."""
        self._name = str(path)
        self._file = _open_regular(path)
        try:
            self._opened = self._fstat()
            _check(self._name, "since it was scanned", self._opened, size, mtime_ns, inode or None)
            if size == 0:
                self._prove_unchanged()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> CheckedFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes or fewer: at most :attr:`remaining`, which must not be 0."""
        try:
            data = self._file.read(min(n, self.remaining))
        except OSError as exc:
            raise FileUnreadableError(self._name, _reason(exc)) from exc
        if not data:
            raise FileChangedError(self._name, "shrank while it was read")
        self.remaining -= len(data)
        if not self.remaining:
            # Checked before the last bytes leave, so a changed file never completes.
            self._prove_unchanged()
        return data

    def close(self) -> None:
        self._file.close()

    def _fstat(self) -> os.stat_result:
        try:
            return os.fstat(self._file.fileno())
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


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading, unbuffered, refusing anything but a regular file.

    Opened non-blocking: a plain ``open`` of a FIFO waits for a writer forever, and a file
    swapped for one after the scan would hang its worker thread beyond any cancellation.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileUnreadableError(str(path), _reason(exc)) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileUnreadableError(str(path), "not a regular file")
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise FileUnreadableError(str(path), _reason(exc)) from exc
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb", buffering=0)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
