"""Disk full while results download: a clear error, no partial file, and the next run completes
once there is room again.

Two ways to fill a disk: a real one (a small tmpfs mounted over the output folder, which needs
root and ``mount``; skipped elsewhere), and an injected one (downloads into the output folder
fail with ENOSPC once a byte budget is spent), which runs everywhere.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.disks import mount, small_disk
from tests.e2e.support import run_cli
from tests.reliability.support_a import (
    IMAGE_BATCH,
    VIDEO_BATCH,
    Sources,
    check_partial_output,
    check_results,
    cli_env_for,
    emulator_at,
    expected_results,
    make_sources,
    reliability_settings,
    sync_args,
    sync_in_process,
    temporary_leftovers,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return make_sources(tmp_path_factory.mktemp("disk-sources"), 300, 2, seed=21)


def _expected_paths(state: dict[str, Any], emulator_dir: Path) -> set[Path]:
    out: set[Path] = set()
    for batch in (IMAGE_BATCH, VIDEO_BATCH):
        out |= set(expected_results(state, emulator_dir, batch))
    return out


async def test_a_real_full_disk_stops_with_a_clear_error_and_the_rerun_completes(
    sources: Sources, tmp_path: Path
) -> None:
    emulator_dir, output = tmp_path / "emulator", tmp_path / "out"
    # About a third of what the results need (~190 KB): the disk fills mid-export.
    with small_disk(output, "64k"):
        async with emulator_at(emulator_dir) as emulator:
            env = cli_env_for(emulator, tmp_path / "state")
            first = await run_cli(sync_args(sources, output), env)
            state = emulator.state()

            err = first.stderr.decode()
            assert first.returncode == 1, err[-2000:]
            error_lines = [line for line in err.splitlines() if line.startswith("rfbatch: error:")]
            assert len(error_lines) == 1, err[-2000:]
            assert "disk full while writing under" in error_lines[0]
            assert "No space left on device" in error_lines[0]
            assert "run sync again once there is room" in error_lines[0]
            placed = check_partial_output(state, emulator_dir, output, [IMAGE_BATCH, VIDEO_BATCH])
            assert placed < len(_expected_paths(state, emulator_dir)), "the disk never filled"
            assert not temporary_leftovers(output), "a partial download was left behind"

            grown = mount(["mount", "-o", "remount,size=16m", str(output)])
            assert grown.returncode == 0, grown.stderr
            second = await run_cli(sync_args(sources, output, "--json"), env)
            assert second.returncode == 0, second.stderr.decode()[-2000:]
            summary = json.loads(second.stdout)
            state = emulator.state()

        assert summary["complete"] is True
        assert summary["upload"]["files_sent"] == 0
        assert sum(e["files_skipped"] for e in summary["export"]["batches"]) == placed
        check_results(state, emulator_dir, output)


class _FillingDisk:
    """Files written under ``root`` share ``room`` bytes; a write past it fails with ENOSPC.

    Installed as ``builtins.open``: every way rfbatch writes a result (a streamed download, a
    small one written at once, an archive's members) ends in it.
    """

    def __init__(self, root: Path, room: int) -> None:
        self.root = root
        self.room = room
        self.refused = 0

    def opener(self, real_open: Any) -> Any:
        disk = self

        class FillingFile(io.FileIO):
            def write(self, data: Any) -> int:
                size = len(memoryview(data))
                if size > disk.room:
                    disk.refused += 1
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= size
                return super().write(data)

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            writing = "w" in mode and "b" in mode and not isinstance(file, int)
            if writing and Path(os.fsdecode(file)).is_relative_to(disk.root):
                return FillingFile(file, "wb")
            return real_open(file, mode, *args, **kwargs)

        return open_


async def test_an_injected_full_disk_stops_the_export_and_the_rerun_completes(
    sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_dir, output = tmp_path / "emulator", tmp_path / "out"
    disk = _FillingDisk(output, room=60_000)
    async with emulator_at(emulator_dir) as emulator:
        settings = reliability_settings(emulator, tmp_path / "state", export={"workers": 2})
        monkeypatch.setattr(builtins, "open", disk.opener(builtins.open))
        first = await sync_in_process(settings, sources, output)
        monkeypatch.undo()
        state = emulator.state()
        placed = check_partial_output(state, emulator_dir, output, [IMAGE_BATCH, VIDEO_BATCH])
        second = await sync_in_process(settings, sources, output)
        state = emulator.state()

    assert disk.refused >= 1
    stopped = [e.stopped for e in first.result.exports if e.stopped]
    assert len(stopped) == 1, [e.summary() for e in first.result.exports]
    assert "disk full while writing under" in stopped[0]
    assert not first.result.complete
    # The exports after the one that hit the full disk were not even started.
    assert first.result.exports[-1].stopped is not None
    assert placed < len(_expected_paths(state, emulator_dir))

    assert second.result.complete
    assert sum(e.skipped for e in second.result.exports) == placed
    check_results(state, emulator_dir, output)


async def test_a_folder_that_cannot_be_made_on_a_full_disk_stops_the_export(
    sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk can refuse a folder before any file: that stops the export too (it is not
    one file's fault), and the rerun completes."""
    emulator_dir, output = tmp_path / "emulator", tmp_path / "out"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "results" and self.is_relative_to(output):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_mkdir(self, *args, **kwargs)

    async with emulator_at(emulator_dir) as emulator:
        settings = reliability_settings(emulator, tmp_path / "state")
        monkeypatch.setattr(Path, "mkdir", mkdir)
        first = await sync_in_process(settings, sources, output)
        monkeypatch.undo()
        second = await sync_in_process(settings, sources, output)
        state = emulator.state()

    (stopped,) = [e.stopped for e in first.result.exports if e.stopped]
    assert "disk full while creating folders under" in stopped
    assert "No space left on device" in stopped
    assert len(first.result.exports) == 1, "later exports started on a full disk"
    assert not first.result.exports[0].failed, "the folder was blamed on the files"
    assert second.result.complete
    check_results(state, emulator_dir, output)
