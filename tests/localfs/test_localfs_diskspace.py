"""Free space on the output's disk, and the floor an export keeps above it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rfbatch.localfs import diskspace
from rfbatch.localfs.diskspace import DiskGuard, free_bytes


def test_free_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert free_bytes(tmp_path) > 0
    # A folder not created yet is measured on the nearest one that exists.
    asked: list[Path] = []
    real = shutil.disk_usage

    def disk_usage(path: Path) -> Any:
        asked.append(Path(path))
        return real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    assert free_bytes(tmp_path / "not" / "yet" / "there") > 0
    assert asked == [tmp_path]


async def test_guard_says_why_it_refuses_and_reuses_a_recent_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [1000]
    monkeypatch.setattr(diskspace, "free_bytes", lambda _path: free[0])
    monkeypatch.setattr(DiskGuard, "REUSE_SECONDS", 3600.0)
    guard = DiskGuard(tmp_path, floor=400)
    assert await guard.shortfall() is None
    assert await guard.shortfall(600) is None
    refused = await guard.shortfall(601)
    assert refused is not None
    assert f"under {tmp_path}: 1000 bytes free" in refused
    assert "601 bytes plus the floor of 400 bytes (export.min_free_bytes)" in refused
    # The disk filled up, but the last reading is recent: it stands (ENOSPC still reports it).
    free[0] = 0
    assert await guard.shortfall() is None
    monkeypatch.setattr(DiskGuard, "REUSE_SECONDS", 0.0)
    refused = await guard.shortfall()
    assert refused is not None
    assert "0 bytes free, the floor of 400 bytes" in refused
