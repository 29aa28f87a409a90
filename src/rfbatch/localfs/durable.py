"""Write a group of small files and make them all durable with one flush per file system.

fsync(2) of each small file costs a journal commit each (on this project's benchmark disk
~0.25 ms of CPU and ~0.65 ms of waiting per file, and one thread doing them in turn serialises
the commits). The way git's batched fsync mode works, a group is written first and flushed once:
here with syncfs(2), which on Linux writes back every dirty page and inode of the file system,
commits its journal and flushes the device's cache before it returns. It is used only where
that is known to hold, and where it reports write-back errors:

* the file system is one whose ``sync_fs`` commits and flushes (:data:`_SYNCFS_SAFE`: ext2/3/4,
  XFS, btrfs; tmpfs has nothing to flush). FUSE, network and unknown file systems get fsync(2)
  of each file instead: their syncfs may not reach the storage behind them;
* the kernel is 5.8 or newer: older ones return 0 from syncfs even when write-back failed;
* the file descriptor syncfs is given was opened (:meth:`GroupFlush.watch`) before any file of
  the group was written: syncfs reports the write-back errors of the file system that happened
  since that descriptor was opened (or last reported), so an error during the group's
  write-back cannot be missed. It may also report another program's error on the same file
  system; the whole group then fails, which is safe: its files are fetched again.

Anything else (another OS, no syncfs in the C library, a folder never watched) falls back to
fsync(2) of each file right after it is written: slower, never weaker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

# statfs(2) f_type of the file systems whose syncfs is trusted (see the module docstring).
_SYNCFS_SAFE = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4 (the ext4 driver flushes the device in each mode)
        0x58465342,  # XFS: forces the log
        0x9123683E,  # btrfs: commits the transaction
        0x01021994,  # tmpfs: memory, nothing to flush
    }
)
_MIN_KERNEL = (5, 8)
# struct statfs is larger than this on every Linux ABI; f_type is its first field.
_STATFS_BUFFER = 256


def _kernel_reports_errors() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= _MIN_KERNEL


def _libc_call(name: str) -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return func


_syncfs = _libc_call("syncfs") if _kernel_reports_errors() else None
_statfs = _libc_call("statfs") if _syncfs is not None else None


def _fs_type(folder: Path) -> int | None:
    """The statfs ``f_type`` of the file system holding ``folder``, or ``None``."""
    if _statfs is None:
        return None
    buffer = ctypes.create_string_buffer(_STATFS_BUFFER)
    if _statfs(os.fsencode(folder), buffer) != 0:
        return None
    # f_type is a C long (__fsword_t) on the 64-bit ABIs rfbatch runs on; a misread gives a
    # value outside _SYNCFS_SAFE, which falls back to fsync.
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def write_file(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Create ``path`` (truncated if it exists) holding ``data``; fsynced only if asked."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_or_raise(fd: int) -> None:
    assert _syncfs is not None
    if _syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"syncfs failed: {os.strerror(errno)}")


class GroupFlush:
    """Per file system: how the files written into it are made durable (blocking methods).

    :meth:`watch` each folder before writing into it; :meth:`write_all` then writes a group
    and flushes it. Thread-safe; :meth:`close` releases the descriptors.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # st_dev -> descriptor to give syncfs, or None: fsync each file there.
        self._devices: dict[int, int | None] = {}
        self._folders: dict[Path, int] = {}

    def watch(self, folder: Path) -> None:
        """Note ``folder`` (it exists) as a place files will be written into."""
        with self._lock:
            if folder in self._folders:
                return
        dev = os.stat(folder).st_dev
        with self._lock:
            self._folders[folder] = dev
            if dev in self._devices:
                return
            fd: int | None = None
            if _fs_type(folder) in _SYNCFS_SAFE:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._devices[dev] = fd

    def uses_syncfs(self, folder: Path) -> bool:
        with self._lock:
            dev = self._folders.get(folder)
            return dev is not None and self._devices.get(dev) is not None

    def write_all(self, writes: Sequence[tuple[Path, bytes]]) -> list[OSError | None]:
        """Write each ``(path, data)`` and make it durable; one result per write.

        A file that failed is removed. A failed syncfs fails every file written on that file
        system in this call (and removes them): which of them the error hit cannot be known.
        """
        results: list[OSError | None] = []
        flush: dict[int, list[int]] = {}
        for index, (path, data) in enumerate(writes):
            fd = self._syncfs_fd(path.parent)
            try:
                write_file(path, data, fsync=fd is None)
                if fd is not None:
                    flush.setdefault(fd, []).append(index)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.unlink()
                results.append(exc)
                continue
            results.append(None)
        for fd, indexes in flush.items():
            try:
                _syncfs_or_raise(fd)
            except OSError as error:
                for index in indexes:
                    results[index] = error
                    with contextlib.suppress(OSError):
                        writes[index][0].unlink()
        return results

    def _syncfs_fd(self, folder: Path) -> int | None:
        with self._lock:
            dev = self._folders.get(folder)
            return None if dev is None else self._devices.get(dev)

    def close(self) -> None:
        with self._lock:
            for fd in self._devices.values():
                if fd is not None:
                    os.close(fd)
            self._devices.clear()
            self._folders.clear()
