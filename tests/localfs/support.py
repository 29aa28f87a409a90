"""Helpers for the local-disk tests: build real trees of files in temporary folders."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

OLD = time.time() - 3600
MakeFile = Callable[..., Path]


def write_file(path: Path, data: bytes = b"x", *, mtime: float | None = OLD) -> Path:
    """Write ``data`` at ``path`` (parents created), with an old mtime unless told otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
