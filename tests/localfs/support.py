"""Helpers for the local-disk tests: build real trees of files in temporary folders."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rfbatch.localfs import durable
from rfbatch.localfs.durable import GroupFlush

OLD = time.time() - 3600
MakeFile = Callable[..., Path]


def write_file(path: Path, data: bytes = b"x", *, mtime: float | None = OLD) -> Path:
    """Write ``data`` at ``path`` (parents created), with an old mtime unless told otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def syncfs_flush(folder: Path) -> GroupFlush:
    """A :class:`GroupFlush` watching ``folder``; skips the test where syncfs is not trusted."""
    flush = GroupFlush()
    flush.watch(folder)
    if not flush.uses_syncfs(folder):
        flush.close()
        pytest.skip("syncfs is not trusted on this file system")
    return flush


def break_syncfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every syncfs fails as a write-back error would make it."""

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "syncfs failed: Input/output error")

    monkeypatch.setattr(durable, "_syncfs_or_raise", broken)
