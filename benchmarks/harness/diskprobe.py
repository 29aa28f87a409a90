"""Two numbers about the disk the data sets and exports live on, measured at the start of a run.

They explain results the tools cannot change: how many files per second the file system lets a
process create (an export creates one per file it downloads), and how fast it takes a large write
that is flushed with ``fsync`` (an export of big files is bound by it, since rfbatch flushes every
file before it renames it into place).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

CREATE_FILES = 1000
WRITE_MB = 512


def create_rate(folder: Path, files: int = CREATE_FILES) -> float:
    """Files per second created (and closed, empty) in a fresh folder under ``folder``."""
    probe = folder / "probe-create"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    try:
        started = time.perf_counter()
        for i in range(files):
            os.close(os.open(probe / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        return files / (time.perf_counter() - started)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def fsync_write_rate(folder: Path, megabytes: int = WRITE_MB) -> float:
    """MB/s (10^6 bytes) of one large sequential write, ``fsync`` included."""
    path = folder / "probe-write"
    block = os.urandom(1024 * 1024)
    try:
        started = time.perf_counter()
        with path.open("wb") as fh:
            for _ in range(megabytes):
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        return megabytes * len(block) / 1e6 / (time.perf_counter() - started)
    finally:
        path.unlink(missing_ok=True)


def probe(folder: Path) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    os.sync()
    return {
        "file_creates_per_s": round(create_rate(folder)),
        "fsync_write_mb_per_s": round(fsync_write_rate(folder)),
    }
