from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from rfbatch.localfs.watch import resolve_force_polling, watch
from rfbatch.media import FoundFile, Skipped, SourceSpec
from tests.localfs.support import MakeFile, write_file
from tests.waiting import wait_for

FAST = {"debounce_ms": 20, "step_ms": 10, "wake_interval": 0.05, "poll_delay_ms": 20}


class Watching:
    def __init__(self) -> None:
        self.items: list[FoundFile | Skipped] = []
        self.stop = anyio.Event()
        self.finished = anyio.Event()

    def rels(self) -> set[str]:
        return {i.rel for i in self.items if isinstance(i, FoundFile)}


@asynccontextmanager
async def watching(specs: list[SourceSpec], **kwargs: object) -> AsyncIterator[Watching]:
    w = Watching()
    options = {**FAST, **kwargs}

    async def run() -> None:
        async for chunk in watch(specs, stop_event=w.stop, **options):  # type: ignore[arg-type]
            w.items.extend(chunk)
        w.finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        yield w
        w.stop.set()
        with anyio.fail_after(20):
            await w.finished.wait()


def publish(path: Path, data: bytes = b"data") -> None:
    """Write like a careful producer: a partial name first, then an atomic rename."""
    part = path.with_name(path.name + ".part")
    write_file(part, data)
    os.replace(part, path)


async def test_events_bring_new_files_and_filters_apply(
    make_file: MakeFile, tmp_path: Path
) -> None:
    await check_events(make_file, tmp_path, force_polling=False)


async def test_polling_brings_new_files_and_filters_apply(
    make_file: MakeFile, tmp_path: Path
) -> None:
    await check_events(make_file, tmp_path, force_polling=True)


async def check_events(make_file: MakeFile, tmp_path: Path, *, force_polling: bool) -> None:
    src = tmp_path / "src"
    make_file("existing.jpg")
    async with watching(
        [SourceSpec(src, exclude=("skipme/**",))], force_polling=force_polling
    ) as w:
        await wait_for(lambda: "existing.jpg" in w.rels(), '"existing.jpg" in w.rels()')
        publish(src / "new.jpg")
        write_file(src / "notes.txt")
        write_file(src / ".hidden.jpg")
        write_file(src / "skipme" / "x.jpg")
        (src / "sub").mkdir()
        publish(src / "sub" / "clip.mp4")
        await wait_for(
            lambda: {"new.jpg", "sub/clip.mp4"} <= w.rels(),
            '{"new.jpg", "sub/clip.mp4"} <= w.rels()',
        )
    assert w.rels() == {"existing.jpg", "new.jpg", "sub/clip.mp4"}
    clip = next(i for i in w.items if isinstance(i, FoundFile) and i.rel == "sub/clip.mp4")
    assert clip.kind == "video"
    assert clip.size == 4


async def test_folder_moved_in_whole_is_walked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    staging = tmp_path / "staging" / "batch7"
    for i in range(5):
        write_file(staging / "deep" / f"{i}.png")
    write_file(src / "marker.jpg")
    async with watching([SourceSpec(src)], rescan_interval=3600) as w:
        # The initial scan runs once the watcher is up: after it, every event counts.
        await wait_for(lambda: "marker.jpg" in w.rels(), '"marker.jpg" in w.rels()')
        os.replace(staging, src / "batch7")
        await wait_for(lambda: len(w.rels()) == 6, "len(w.rels()) == 6")
    assert w.rels() == {"marker.jpg"} | {f"batch7/deep/{i}.png" for i in range(5)}


async def test_rescan_finds_what_events_missed(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("before.jpg")
    async with watching(
        [SourceSpec(tmp_path / "src")], initial_scan=False, rescan_interval=0.1
    ) as w:
        # No event ever names before.jpg: only a periodic rescan can report it, and it does so
        # again on every round.
        await wait_for(
            lambda: sum(1 for i in w.items if isinstance(i, FoundFile)) >= 2,
            "sum(1 for i in w.items if isinstance(i, FoundFile)) >= 2",
        )
    assert w.rels() == {"before.jpg"}


async def test_too_large_files_are_reported(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("big.jpg", b"x" * 100)
    async with watching([SourceSpec(tmp_path / "src", max_size=10)]) as w:
        await wait_for(
            lambda: any(isinstance(i, Skipped) for i in w.items),
            "any(isinstance(i, Skipped) for i in w.items)",
        )
    [skipped] = [i for i in w.items if isinstance(i, Skipped)]
    assert (skipped.path.name, skipped.reason) == ("big.jpg", "too-large")


async def test_missing_root_is_rescanned_until_it_appears(tmp_path: Path) -> None:
    src = tmp_path / "later"
    async with watching([SourceSpec(src)], rescan_interval=0.05) as w:
        await wait_for(
            lambda: any(isinstance(i, Skipped) for i in w.items),
            "any(isinstance(i, Skipped) for i in w.items)",
        )
        write_file(src / "a.jpg")
        await wait_for(lambda: "a.jpg" in w.rels(), '"a.jpg" in w.rels()')


async def test_cancellation_ends_the_watch(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("a.jpg")
    seen: list[FoundFile | Skipped] = []
    with anyio.fail_after(20):
        with anyio.CancelScope() as scope:
            async for chunk in watch([SourceSpec(tmp_path / "src")], **FAST):  # type: ignore[arg-type]
                seen.extend(chunk)
                scope.cancel()
        assert scope.cancelled_caught
    assert [i.rel for i in seen if isinstance(i, FoundFile)] == ["a.jpg"]


def test_force_polling_honours_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHFILES_FORCE_POLLING", raising=False)
    assert resolve_force_polling(True) is True
    assert resolve_force_polling(False) is None
    assert resolve_force_polling(None) is None
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    assert resolve_force_polling(False) is True
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "false")
    assert resolve_force_polling(False) is None
