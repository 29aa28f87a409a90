"""Free space on the disk that results are written to, and the floor that keeps it from filling.

A full disk fails every write after it, and the rest of the machine with it, so an export stops
starting files once the output's file system is down to a configured floor of free bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import anyio.to_thread

from rfbatch.errors import ConfigError


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system holding ``path`` (or its nearest parent)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


class DiskGuard:
    """Refuses to start a file when the output's file system is below the free-space floor."""

    # A reading is reused this long: thousands of small files a second need not each ask the
    # file system (a write that still runs out of space fails with ENOSPC and is reported).
    REUSE_SECONDS = 0.5

    def __init__(self, root: Path, floor: int) -> None:
        self.root = root
        self.floor = floor
        self._reading: tuple[float, int] | None = None
        self._refreshing = False

    async def shortfall(self, need: int = 0) -> str | None:
        """``None`` when there is room for ``need`` more bytes above the floor, else why not."""
        now = time.monotonic()
        if self._reading is not None and (
            self._refreshing or now - self._reading[0] < self.REUSE_SECONDS
        ):
            # While one caller reads the file system again, the others use the last reading
            # rather than each start a thread call of their own.
            free = self._reading[1]
        else:
            self._refreshing = True
            try:
                free = await anyio.to_thread.run_sync(free_bytes, self.root)
            finally:
                self._refreshing = False
            self._reading = (time.monotonic(), free)
        if free - need >= self.floor:
            return None
        wanted = f"{need} bytes plus " if need else ""
        return (
            f"not enough free disk space under {self.root}: {free} bytes free, "
            f"{wanted}the floor of {self.floor} bytes (export.min_free_bytes) needed"
        )


def check_output_folder(folder: Path) -> None:
    """Before any work: results can be written into ``folder`` (made if missing).

    A byte is written and flushed into a probe file, so a read-only or full file system is found
    now, not after an upload and a paid job: a ConfigError naming the folder and the reason.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".rfbatch-probe-", dir=folder)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"output {folder} cannot be written: {exc.strerror or exc}") from None
