"""Retention: files gone from the source and batches long done are forgotten, the file shrinks.

The guarantee under test (README, "Retention"): an unchanged file is never sent again within
``[state] retention_days`` of its last change; only once it is older, gone from the source and
its batch done is it forgotten, and then it may be sent again if it comes back.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rfbatch.state.database import DB_NAME
from rfbatch.state.manifest import SqliteManifest
from rfbatch.state.records import BatchState
from tests.state.support import ROOT, ff

DAY = 86400.0
RETENTION = 3 * DAY
START = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def raw(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(state_dir / DB_NAME)


def count(state_dir: Path, table: str, where: str = "1") -> int:
    conn = raw(state_dir)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


async def send(m: SqliteManifest, batch: str, rels: list[str], state: BatchState) -> None:
    """Files recorded, packed, ingested into ``batch``, which then stands in ``state``."""
    files = [ff(r) for r in rels]
    assert await m.filter_new(files) == files
    await m.create_batch(batch, "images")
    await m.assign_members(batch, files)
    shard = await m.create_shard(batch, [f.path for f in files], size=10 * len(files))
    await m.mark([f.path for f in files], "ingested", batch_id=batch)
    await m.update_shard(shard.shard_id, state="ingested")
    await m.add_downloads(batch, [(None, "results.jsonl", 10)])
    await m.update_batch(batch, state=state)


def present(*rels: str) -> set[str]:
    return {str(ROOT / r) for r in rels}


async def test_gone_and_done_files_are_forgotten_after_the_retention_only(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    clock = Clock()
    async with await SqliteManifest.open(state_dir, clock=clock) as m:
        await send(m, "rfbatch-a", ["a1.jpg", "a2.jpg", "kept.jpg"], "exported")
        await send(m, "rfbatch-b", ["b1.jpg"], "job_started")  # its job is still running
        on_disk = present("kept.jpg")

        # A day later everything but kept.jpg is gone from the source: too recent to forget.
        clock.now = START + DAY
        gone = await m.forget(clock.now - RETENTION, exists=on_disk.__contains__)
        assert gone.files == 0
        assert count(state_dir, "files") == 4
        # Within the retention a file that comes back unchanged is not sent again.
        assert await m.filter_new([ff("a1.jpg")]) == []

        clock.now = START + RETENTION + DAY
        gone = await m.forget(clock.now - RETENTION, exists=on_disk.__contains__)
        # a1 and a2 are forgotten; kept.jpg is still in the source; b1's batch is not done.
        assert gone.files == 2
        remaining = {r[0] for r in raw(state_dir).execute("SELECT path FROM files")}
        assert remaining == present("kept.jpg", "b1.jpg")
        assert count(state_dir, "members", "batch_id = 'rfbatch-a'") == 1
        # rfbatch-a still has a file row (kept.jpg), so the batch and its rows stay.
        assert count(state_dir, "batches") == 2
        # After the retention, a forgotten file that comes back is new and may be sent again.
        assert await m.filter_new([ff("a1.jpg")]) == [ff("a1.jpg")]
        assert await m.filter_new([ff("kept.jpg")]) == []


async def test_a_done_batch_without_files_goes_with_its_shards_members_and_downloads(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    clock = Clock()
    async with await SqliteManifest.open(state_dir, clock=clock) as m:
        await send(m, "rfbatch-old", ["x.jpg", "y.jpg"], "exported")
        await send(m, "rfbatch-run", ["z.jpg"], "job_started")
        clock.now = START + RETENTION + 1
        gone = await m.forget(clock.now - RETENTION, exists=lambda _: False)
        assert (gone.files, gone.batches, gone.shards, gone.downloads) == (2, 1, 1, 1)
        assert await m.get_batch("rfbatch-old") is None
        assert await m.get_batch("rfbatch-run") is not None
        for table in ("shards", "downloads", "members"):
            assert count(state_dir, table, "batch_id = 'rfbatch-old'") == 0
            assert count(state_dir, table, "batch_id = 'rfbatch-run'") == 1
        # Without a workflow a confirmed batch is done: the caller says which states are.
        await m.update_batch("rfbatch-run", state="confirmed")
        clock.now += RETENTION + 1
        gone = await m.forget(
            clock.now - RETENTION, done_batch_states=["confirmed"], exists=lambda _: False
        )
        assert (gone.files, gone.batches) == (1, 1)
        assert count(state_dir, "files") == 0


async def test_the_file_shrinks_after_a_prune(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    clock = Clock()
    n = 20_000
    async with await SqliteManifest.open(state_dir, clock=clock) as m:
        rels = [f"cam{i % 4}/2026-12-05/{i:08d}-a-long-camera-file-name.jpg" for i in range(n)]
        await send(m, "rfbatch-big", rels, "exported")
        await send(m, "rfbatch-small", ["live.jpg"], "exported")
        clock.now = START + RETENTION + 1
        gone = await m.forget(clock.now - RETENTION, exists=present("live.jpg").__contains__)
        assert gone.files == n
        assert gone.batches == 1
        # The freed pages went back to the file system: a few pages per live file remain.
        assert gone.bytes_after < gone.bytes_before / 10
    size = os.path.getsize(state_dir / DB_NAME)
    assert size == gone.bytes_after or size < gone.bytes_before / 10
    assert count(state_dir, "files") == 1


async def test_an_existing_database_switches_to_incremental_vacuum_once(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with await SqliteManifest.open(state_dir) as m:
        await m.filter_new([ff("a.jpg")])
    conn = raw(state_dir)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # a new database: incremental
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA auto_vacuum = 0")
    conn.execute("VACUUM")  # as a manifest written before this rfbatch
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    with capture_logs() as logs:
        async with await SqliteManifest.open(state_dir) as m:
            assert await m.filter_new([ff("a.jpg")]) == [ff("a.jpg")]  # still seen, not lost
    assert [e["event"] for e in logs] == ["manifest.vacuum", "manifest.vacuumed"]
    conn = raw(state_dir)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()
    with capture_logs() as logs:
        await (await SqliteManifest.open(state_dir)).close()
    assert logs == []


@pytest.mark.parametrize("state", ["seen", "settled", "packed", "uploading"])
async def test_files_not_in_a_final_state_are_never_forgotten(tmp_path: Path, state: str) -> None:
    clock = Clock()
    async with await SqliteManifest.open(tmp_path / "state", clock=clock) as m:
        await m.filter_new([ff("w.jpg")])
        await m.mark([ff("w.jpg").path], state)  # type: ignore[arg-type]
        clock.now = START + 10 * RETENTION
        gone = await m.forget(clock.now - RETENTION, exists=lambda _: False)
        assert gone.files == 0
        assert await m.get_file(ff("w.jpg").path) is not None
