"""The group commit that puts downloaded files in place: every file lands and is recorded once,
and the durable steps come in the order the crash guarantee rests on."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from rfbatch.api.schemas import FileMetadata
from rfbatch.errors import IncompleteBodyError, ManifestClosedError
from rfbatch.localfs import durable
from rfbatch.localfs.atomic import Move, atomic_target, commit_many_sync
from rfbatch.localfs.durable import GroupFlush
from rfbatch.pipeline import download
from rfbatch.pipeline.download import Fetched, Placer, Planned, is_present
from rfbatch.state.manifest import SqliteManifest
from rfbatch.state.records import DownloadMark, DownloadState
from tests.localfs.support import break_syncfs, syncfs_flush


def planned(out: Path, name: str) -> Planned:
    meta = FileMetadata.model_validate(
        {"downloadURL": f"http://127.0.0.1:1/{name}", "file_name": name, "content_type": "x"}
    )
    return Planned(part_name="part-1", meta=meta, dest=out / name, unpack_into=None)


def written(item: Planned, data: bytes) -> Path:
    """What Transfer.download leaves behind for a large body: it in a temporary name."""
    tmp = atomic_target(item.dest)
    tmp.write_bytes(data)
    return tmp


class Outcomes:
    """The placer's reports: files placed and files failed, by name."""

    def __init__(self) -> None:
        self.placed: dict[str, Fetched] = {}
        self.failed: dict[str, Exception] = {}

    def on_placed(self, item: Planned, fetched: Fetched) -> None:
        self.placed[item.file_name] = fetched

    async def on_failed(self, item: Planned, exc: Exception) -> None:
        self.failed[item.file_name] = exc


def new_placer(
    manifest: SqliteManifest,
    outcomes: Outcomes,
    *,
    flush: GroupFlush | None = None,
    budget: int = download.PLACER_BUDGET,
) -> Placer:
    return Placer(
        manifest,
        "out-1",
        on_placed=outcomes.on_placed,
        on_failed=outcomes.on_failed,
        flush=flush or GroupFlush(),
        budget=budget,
    )


def hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*"))


async def test_files_finishing_together_all_land_and_are_recorded_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    names = [f"r{i:02}.json" for i in range(12)] + [f"sub/s{i}.json" for i in range(12)]
    outcomes = Outcomes()
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = new_placer(manifest, outcomes)
        items = [planned(out, name) for name in names]

        async def submit(index: int, item: Planned) -> None:
            data = item.file_name.encode() * 3
            if index % 2:  # a small body, kept in memory
                await placer.submit(item, atomic_target(item.dest), len(data), data)
            else:  # a large one, already in its temporary file
                await placer.submit(item, written(item, data), len(data), None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(placer.run)
            async with anyio.create_task_group() as fetchers:
                for index, item in enumerate(items):
                    fetchers.start_soon(submit, index, item)
            placer.close()

        rows = {row.file_name: row for row in await manifest.list_downloads("out-1")}

    assert outcomes.failed == {}
    for item, name in zip(items, names, strict=True):
        assert item.dest.read_bytes() == name.encode() * 3
        assert outcomes.placed[name] == Fetched(len(name) * 3, 1)
        assert rows[name].state == "done"
        assert rows[name].path == item.dest
        assert rows[name].size == len(name) * 3
        assert is_present(item, rows[name])
    assert hidden(out) == []  # no temporary file is left anywhere


async def test_a_short_file_fails_alone_and_the_others_land(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = new_placer(manifest, outcomes)
        good = [planned(out, f"g{i}.json") for i in range(5)]
        bad = planned(out, "bad.json")
        async with anyio.create_task_group() as tg:
            tg.start_soon(placer.run)
            for item in good:
                await placer.submit(item, atomic_target(item.dest), 2, b"{}")
            await placer.submit(bad, written(bad, b"{"), 2, None)  # one byte of two
            placer.close()
        rows = {row.file_name: row for row in await manifest.list_downloads("out-1")}

    assert list(outcomes.failed) == ["bad.json"]
    assert isinstance(outcomes.failed["bad.json"], IncompleteBodyError)
    assert str(outcomes.failed["bad.json"]) == "bad.json: wrote 1 bytes, expected 2"
    assert not bad.dest.exists()
    assert rows["bad.json"].state == "pending"  # the export records it failed
    assert not is_present(bad, rows["bad.json"])
    for item in good:
        assert item.dest.read_bytes() == b"{}"
        assert rows[item.file_name].state == "done"
    assert hidden(out) == []


async def test_a_manifest_that_cannot_record_fails_every_file_and_moves_none(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    manifest = await SqliteManifest.open(tmp_path / "state")
    placer = new_placer(manifest, outcomes)
    await manifest.close()
    small, large = planned(out, "a.json"), planned(out, "b.json")

    async with anyio.create_task_group() as tg:
        tg.start_soon(placer.run)
        await placer.submit(small, atomic_target(small.dest), 2, b"{}")
        await placer.submit(large, written(large, b"[]"), 2, None)
        placer.close()

    assert sorted(outcomes.failed) == ["a.json", "b.json"]
    assert all(isinstance(e, ManifestClosedError) for e in outcomes.failed.values())
    # Never renamed unrecorded, and no temporary file left behind.
    assert list(out.iterdir()) == []


async def test_the_steps_come_in_the_order_the_crash_guarantee_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes durable under temporary names, then ``pending``, then renamed and the folder
    flushed, then ``done``: at no step is a file under its final name without its bytes on disk,
    nor recorded done before it is there and its rename flushed."""
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    steps: list[str] = []
    items = [planned(out, f"f{i}.bin") for i in range(6)]
    body = {item.file_name: bytes([i]) * (1000 + i) for i, item in enumerate(items)}

    def on_disk() -> tuple[list[str], list[str]]:
        finals = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        temps = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
        return finals, temps

    real_syncfs = durable._syncfs_or_raise
    real_fsync = os.fsync

    def syncfs(fd: int) -> None:
        steps.append("flush")
        real_syncfs(fd)

    def fsync(fd: int) -> None:
        steps.append("flush")
        real_fsync(fd)

    monkeypatch.setattr(durable, "_syncfs_or_raise", syncfs)
    # os.fsync flushes a file where syncfs is not trusted, and a folder after its renames.
    monkeypatch.setattr(os, "fsync", fsync)

    def rename(moves: Sequence[Move]) -> list[Exception | None]:
        finals, temps = on_disk()
        assert finals == []
        assert len(temps) == len(items)
        for move in moves:  # each temporary file is whole before any rename
            assert move.tmp.read_bytes() == body[move.dest.name]
        steps.append("rename")
        return commit_many_sync(moves)

    monkeypatch.setattr(download, "commit_many_sync", rename)

    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        real_mark = manifest.mark_downloads

        async def mark(batch: str, state: DownloadState, marks: Sequence[DownloadMark]) -> None:
            finals, _ = on_disk()
            if state == "pending":
                assert finals == []
            if state == "done":
                assert finals == sorted(m.file_name for m in marks)
                assert all((out / m.file_name).read_bytes() == body[m.file_name] for m in marks)
            steps.append(state)
            await real_mark(batch, state, marks)

        monkeypatch.setattr(manifest, "mark_downloads", mark)
        flush = GroupFlush()
        flush.watch(out)
        placer = new_placer(manifest, outcomes, flush=flush)
        async with anyio.create_task_group() as tg:
            for item in items:
                data = body[item.file_name]
                await placer.submit(item, atomic_target(item.dest), len(data), data)
            placer.close()  # everything queued first: one group
            tg.start_soon(placer.run)

    assert outcomes.failed == {}
    flushes = steps.index("pending")
    assert flushes >= 1
    assert set(steps[:flushes]) == {"flush"}
    assert steps[flushes:] == ["pending", "rename", "flush", "done"]


async def test_a_failed_flush_fails_the_whole_group_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    flush = syncfs_flush(out)
    break_syncfs(monkeypatch)
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = new_placer(manifest, outcomes, flush=flush)
        items = [planned(out, f"f{i}.json") for i in range(4)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(placer.run)
            for item in items:
                await placer.submit(item, atomic_target(item.dest), 2, b"{}")
            placer.close()
        rows = await manifest.list_downloads("out-1")

    assert sorted(outcomes.failed) == [item.file_name for item in items]
    assert all(getattr(e, "errno", None) == errno.EIO for e in outcomes.failed.values())
    assert outcomes.placed == {}
    assert rows == []  # not even pending
    assert list(out.iterdir()) == []


async def test_a_stopped_placer_drops_its_queue_renaming_and_recording_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = new_placer(manifest, outcomes)
        items = [planned(out, f"f{i}.json") for i in range(3)]
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for item in items[:2]:
                    await placer.submit(item, atomic_target(item.dest), 2, b"{}")
                await placer.submit(items[2], written(items[2], b"[]"), 2, None)
                scope.cancel()  # before the placer ever ran
                tg.start_soon(placer.run)
        rows = await manifest.list_downloads("out-1")

    assert (outcomes.placed, outcomes.failed, rows) == ({}, {}, [])
    assert list(out.iterdir()) == []  # the large body's temporary file is removed too


async def test_submitters_wait_while_the_bodies_fill_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcomes = Outcomes()
    submitted: list[str] = []
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = new_placer(manifest, outcomes, budget=10)
        items = [planned(out, f"f{i}.bin") for i in range(3)]

        async def submit(item: Planned, data: bytes) -> None:
            await placer.submit(item, atomic_target(item.dest), len(data), data)
            submitted.append(item.file_name)

        async with anyio.create_task_group() as tg:
            await submit(items[0], b"x" * 6)
            tg.start_soon(submit, items[1], b"y" * 6)
            await anyio.wait_all_tasks_blocked()
            # 12 bytes would be over the budget of 10: the second waits for the first's write.
            assert submitted == ["f0.bin"]
            tg.start_soon(placer.run)
            await submit(items[2], b"z" * 6)
            placer.close()

    assert submitted == ["f0.bin", "f1.bin", "f2.bin"]
    assert sorted(outcomes.placed) == ["f0.bin", "f1.bin", "f2.bin"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        "f0.bin": b"x" * 6,
        "f1.bin": b"y" * 6,
        "f2.bin": b"z" * 6,
    }
