"""The free-space floor: checked before the export and before each file; never a partial file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.localfs import diskspace, durable
from rfbatch.localfs.diskspace import DiskGuard, free_bytes
from rfbatch.pipeline.export import export_batch
from tests.export.support import (
    downloads,
    export_settings,
    fast_services,
    images,
    stage_sharded,
    tree,
)

GiB = 1024**3


async def test_floor_above_free_space_stops_before_any_download(
    emulator: Emulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    floor = free_bytes(tmp_path) + 50 * GiB
    settings = export_settings(emulator.base_url, tmp_path / "state", min_free_bytes=floor)

    async with fast_services(settings) as services:
        await stage_sharded(services, "full", images(5))
        result = await export_batch(services, "full", out)

    assert result.stopped is not None
    assert "not enough free disk space" in result.stopped
    assert f"floor of {floor} bytes (export.min_free_bytes)" in result.stopped
    assert not result.complete
    assert result.downloaded == 0
    assert downloads(emulator) == 0
    assert tree(out) == {}


async def test_floor_reached_midway_stops_cleanly_and_a_rerun_finishes(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = images(30, size=200_000)
    out = tmp_path / "out"
    settings = export_settings(emulator.base_url, tmp_path / "state", workers=3, page_size=5)
    probes: list[Path] = []

    # The disk cannot be filled for real in a test: the probe reports it full from the 9th look.
    def filling_disk(path: Path) -> int:
        probes.append(path)
        return free_bytes(path) if len(probes) <= 8 else 0

    async with fast_services(settings) as services:
        await stage_sharded(services, "fill", files)
        # Slow downloads, so that other fetchers are mid-body when the floor is hit.
        emulator.set_faults(
            FaultProfile(routes={"download": FaultRates(slow=1.0)}, slow_seconds=0.05)
        )
        monkeypatch.setattr(diskspace, "free_bytes", filling_disk)
        monkeypatch.setattr(DiskGuard, "REUSE_SECONDS", 0.0)  # ask before every file
        stopped = await export_batch(services, "fill", out)
        monkeypatch.undo()
        emulator.set_faults(None)
        rows = {r.file_name: r for r in await services.manifest.list_downloads("fill")}

    assert stopped.stopped is not None
    assert "not enough free disk space" in stopped.stopped
    assert 0 < stopped.downloaded < len(files)
    # What arrived is whole; nothing partial, no temporary file, nothing else.
    present = tree(out)
    assert len(present) == stopped.downloaded
    assert all(files[name] == data for name, data in present.items())
    assert all(rows[name].state == "done" for name in present)

    async with fast_services(settings) as services:
        rerun = await export_batch(services, "fill", out)
        fetched = services.transfer.statistics()

    assert rerun.complete
    missing = {name: data for name, data in files.items() if name not in present}
    assert (rerun.skipped, rerun.downloaded) == (len(present), len(missing))
    # Only the missing files crossed the wire again, each once.
    assert fetched.downloads == len(missing)
    assert fetched.bytes_received == sum(len(d) for d in missing.values())
    assert tree(out) == files


async def test_disk_full_while_writing_stops_the_export(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    settings = export_settings(emulator.base_url, tmp_path / "state", workers=1)

    def no_space(path: Path, data: bytes, *, fsync: bool = False) -> None:
        # Half the body reaches the disk, then the disk is full.
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    async with fast_services(settings) as services:
        await stage_sharded(services, "enospc", images(4))
        # Results this small are kept in memory and written by the placer's group commit.
        monkeypatch.setattr(durable, "write_file", no_space)
        result = await export_batch(services, "enospc", out)

    assert result.stopped is not None
    assert "disk full" in result.stopped
    assert "No space left on device" in result.stopped
    assert result.downloaded == 0
    assert tree(out) == {}
