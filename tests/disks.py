"""Small real disks for tests: a tmpfs mounted over a folder (needs root and ``mount``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``mount`` (or ``umount``) with ``args``; the caller reads the result."""
    return subprocess.run(args, capture_output=True, check=False, timeout=30)


@contextmanager
def small_disk(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` for the block; skips the test without rights."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    mounted = mount(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        mount(["umount", "-l", str(path)])
