"""Big trees for months: quick rescans list only folders that changed, and a watcher out of
inotify watches says so once and goes on by polling (the limit is simulated, never changed)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rfbatch.localfs.dircache import DirCache
from rfbatch.localfs.scan import ScanStats, iter_scan
from rfbatch.localfs.watch import WatchStatus
from rfbatch.media import FoundFile, SourceSpec
from tests.localfs.support import write_file
from tests.localfs.test_localfs_watch import publish, watching
from tests.waiting import wait_for

HOUR_AGO = time.time() - 3600


def camera_tree(root: Path, cameras: int = 4, days: int = 5) -> None:
    """A folder per camera per day, one image in each, every folder's mtime an hour old (an
    mtime younger than the racy window is never trusted)."""
    for cam in range(cameras):
        for day in range(days):
            write_file(root / f"cam{cam}" / f"day{day}" / "img.jpg")
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            os.utime(folder, (HOUR_AGO, HOUR_AGO))


async def scan_rels(
    spec: SourceSpec, caches: list[DirCache], *, quick: bool
) -> tuple[set[str], ScanStats]:
    stats = ScanStats()
    rels = {
        item.rel
        async for item in iter_scan([spec], stats=stats, caches=caches, quick=quick)
        if isinstance(item, FoundFile)
    }
    return rels, stats


async def test_a_quick_rescan_lists_only_the_folders_that_changed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    camera_tree(src)
    spec = SourceSpec(src)
    caches = [DirCache()]
    found, stats = await scan_rels(spec, caches, quick=False)
    assert len(found) == 20
    assert stats.directories == 25  # the root, 4 cameras, 20 days

    # Nothing changed: no folder is listed, nothing is found again.
    assert await scan_rels(spec, caches, quick=True) == (set(), ScanStats())
    # A new image deep down: its folder is listed, and only it (the others are stat'ed).
    publish(src / "cam2" / "day3" / "new.jpg")
    found, stats = await scan_rels(spec, caches, quick=True)
    assert (found, stats.directories) == ({"cam2/day3/img.jpg", "cam2/day3/new.jpg"}, 1)
    # A new camera folder: found through its parent, which changed too.
    write_file(src / "cam9" / "day0" / "first.jpg")
    found, _ = await scan_rels(spec, caches, quick=True)
    assert "cam9/day0/first.jpg" in found
    # A file rewritten in place moves no folder's mtime: left to events and full rescans.
    write_file(src / "cam0" / "day0" / "img.jpg", b"rewritten")
    os.utime(src / "cam0" / "day0", (HOUR_AGO, HOUR_AGO))
    found, _ = await scan_rels(spec, caches, quick=True)
    assert "cam0/day0/img.jpg" not in found
    found, _ = await scan_rels(spec, [DirCache()], quick=False)
    assert "cam0/day0/img.jpg" in found


async def test_a_folder_with_a_file_too_young_to_take_is_listed_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    camera_tree(src, cameras=1, days=1)
    write_file(src / "cam0" / "day0" / "fresh.jpg", mtime=None)  # written just now
    os.utime(src / "cam0" / "day0", (HOUR_AGO, HOUR_AGO))
    spec = SourceSpec(src, min_age_seconds=600)
    caches = [DirCache()]
    assert (await scan_rels(spec, caches, quick=False))[0] == {"cam0/day0/img.jpg"}
    _, stats = await scan_rels(spec, caches, quick=True)
    assert stats.directories == 1  # day0 again, to take its files once they are old enough


async def test_a_rescan_forgets_the_folders_that_are_gone(tmp_path: Path) -> None:
    src = tmp_path / "src"
    camera_tree(src)
    spec = SourceSpec(src)
    caches = [DirCache()]
    await scan_rels(spec, caches, quick=False)
    assert len(caches[0]) == 25  # the root, 4 cameras, 20 days

    # A camera's folder deleted whole: the quick rescan lists the root (its mtime moved, too
    # recently to be trusted, so it is not kept either) and forgets cam3 and its 5 days.
    shutil.rmtree(src / "cam3")
    await scan_rels(spec, caches, quick=True)
    assert len(caches[0]) == 25 - 1 - 6
    # A full rescan forgets too: a day of cam0 moved away, its parent's mtime set back.
    shutil.move(src / "cam0" / "day4", tmp_path / "elsewhere")
    os.utime(src / "cam0", (HOUR_AGO, HOUR_AGO))
    os.utime(src, (HOUR_AGO, HOUR_AGO))
    await scan_rels(spec, caches, quick=False)
    assert len(caches[0]) == 25 - 6 - 1


class Failing:
    """A watcher whose first step fails as ``exc``."""

    def __init__(self, exc: OSError) -> None:
        self.exc = exc

    def __call__(self, *_: Any, **__: Any) -> Failing:
        return self

    def __aiter__(self) -> Failing:
        return self

    async def __anext__(self) -> set[Any]:
        raise self.exc


# What watchfiles raises when the user's inotify watches are used up.
limit_reached = Failing(FileNotFoundError('OS file watch limit reached. about ["/data/cam7/d12"]'))


async def test_out_of_watches_it_says_so_once_and_finds_new_files_by_polling(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    camera_tree(src)
    status = WatchStatus()
    with capture_logs() as logs:
        async with watching(
            [SourceSpec(src)], watcher=limit_reached, status=status, poll_interval=0.2
        ) as w:
            await wait_for(lambda: len(w.rels()) == 20, "the initial scan")
            publish(src / "cam1" / "day4" / "late.jpg")
            await wait_for(lambda: "cam1/day4/late.jpg" in w.rels(), "the new file, by polling")
            await wait_for(lambda: status.quick_rescans >= 3, "more polls")

    warnings = [e for e in logs if e["event"] == "watch.limit"]
    assert len(warnings) == 1
    assert status.polling
    assert status.problem is not None
    assert status.problem == warnings[0]["problem"]
    assert "fs.inotify.max_user_watches" in status.problem
    assert "[scan] events = false" in status.problem


async def test_any_other_watcher_failure_is_not_taken_for_the_limit(tmp_path: Path) -> None:
    broken = Failing(PermissionError("the source is not ours to read"))

    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(ExceptionGroup) as failure:
        async with watching([SourceSpec(src)], watcher=broken):
            await wait_for(lambda: False, "the failure", timeout=20)
    assert failure.group_contains(PermissionError, match="not ours to read", depth=None)


async def test_without_events_new_files_come_by_quick_rescans(tmp_path: Path) -> None:
    src = tmp_path / "src"
    camera_tree(src)
    status = WatchStatus()
    # A watcher that would fail if it were ever started: with events off, it never is.
    never = Failing(OSError("events are off: no watcher should start"))
    async with watching(
        [SourceSpec(src)], events=False, watcher=never, status=status, poll_interval=0.2
    ) as w:
        await wait_for(lambda: len(w.rels()) == 20, "the initial scan")
        publish(src / "cam3" / "day0" / "late.jpg")
        await wait_for(lambda: "cam3/day0/late.jpg" in w.rels(), "the new file, by a quick rescan")
    assert (status.polling, status.problem) == (True, None)
    assert status.full_rescans == 1
