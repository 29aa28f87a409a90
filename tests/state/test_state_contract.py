"""The ledger contract: what every implementation of :class:`~rfbatch.state.ledger.Ledger` does.

Each test runs once per backend of :data:`tests.state.support.BACKENDS`; SQLite-only behaviour
(files, locks, schema, crashes) is tested in ``test_state_sqlite.py`` and ``test_state_crash.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rfbatch.errors import (
    ConfigError,
    InvalidStateError,
    ManifestClosedError,
    UnknownBatchError,
    UnknownShardError,
    UnresumableRowError,
)
from rfbatch.media import FoundFile, Skipped
from rfbatch.state.ledger import EVENT_RETENTION, Ledger
from rfbatch.state.records import BatchState
from tests.state.support import ROOT, LedgerBackend, ff, files_of_shard, member_path, shard_of


async def test_a_closed_ledger_refuses_every_call(backend: LedgerBackend) -> None:
    m = await backend.open()
    await m.close()
    await m.close()  # twice is fine
    with pytest.raises(ManifestClosedError, match="closed"):
        await m.counts()
    with pytest.raises(ManifestClosedError, match="closed"):
        await m.record_event("evt-1")
    async with await backend.open() as again:  # a closed ledger released its store
        assert (await again.counts())["seen"] == 0


async def test_filter_new_returns_what_must_be_sent(ledger: Ledger) -> None:
    a, b, c, d = ff("a.jpg"), ff("b.jpg"), ff("c.jpg"), ff("d.jpg")
    assert await ledger.filter_new([a, b, c, d, a]) == [a, b, c, d]
    assert (await ledger.counts())["seen"] == 4
    # Nothing sent yet: still to send.
    assert await ledger.filter_new([a, b]) == [a, b]
    await ledger.mark([a.path], "uploaded")
    await ledger.mark([b.path], "packed")
    await ledger.mark([c.path], "skipped", error="too-large")
    await ledger.mark([d.path], "failed", error="boom")
    assert await ledger.filter_new([a, b, c, d]) == [d]


async def test_changed_file_is_sent_again_and_unchanged_is_not(ledger: Ledger) -> None:
    old = ff("cam/x.jpg", size=10, mtime_ns=1)
    await ledger.filter_new([old])
    shard = await ledger.create_shard("batch-1", [old.path], size=10)
    await ledger.mark([old.path], "uploaded")
    assert await ledger.filter_new([old]) == []
    grown = ff("cam/x.jpg", size=11, mtime_ns=1)
    touched = ff("cam/x.jpg", size=11, mtime_ns=2)
    assert await ledger.filter_new([grown]) == [grown]
    row = await ledger.get_file(old.path)
    assert row is not None
    assert (row.state, row.size, row.batch_id, row.shard_id) == ("seen", 11, None, None)
    await ledger.mark([old.path], "ingested")
    assert await ledger.filter_new([grown]) == []
    assert await ledger.filter_new([touched]) == [touched]
    # The old shard's late success must not cover the new version.
    assert await ledger.mark([old.path], "uploaded", only_shard=shard.shard_id) == 0
    row = await ledger.get_file(old.path)
    assert row is not None
    assert row.state == "seen"


async def test_mark_sets_fields_and_counts_attempts(ledger: Ledger) -> None:
    files = [ff(f"{i}.jpg") for i in range(3)]
    await ledger.filter_new(files)
    paths = [f.path for f in files]
    assert await ledger.mark([*paths, ROOT / "unknown.jpg"], "uploading", batch_id="b1") == 3
    await ledger.mark(paths[:1], "failed", error="HTTP 503")
    await ledger.mark(paths[:1], "uploading")
    first = await ledger.get_file(paths[0])
    assert first is not None
    assert (first.state, first.batch_id, first.attempts, first.last_error) == (
        "uploading",
        "b1",
        2,
        None,
    )
    await ledger.mark(paths[:1], "failed", error="HTTP 503")
    first = await ledger.get_file(paths[0])
    assert first is not None
    assert first.last_error == "HTTP 503"
    assert first.to_found() == files[0]
    with pytest.raises(InvalidStateError, match="file state"):
        await ledger.mark(paths, "lost")  # type: ignore[arg-type]
    assert await ledger.get_file(ROOT / "unknown.jpg") is None


async def test_record_skipped(ledger: Ledger) -> None:
    big = ff("big.jpg", size=999)
    item = Skipped(big.path, "too-large", "over 20 MiB", size=999, mtime_ns=1_000, kind="image")
    assert await ledger.record_skipped([item]) == [item]
    # The same file met again (a rescan) is nothing new; a changed one is.
    assert await ledger.record_skipped([item]) == []
    changed = Skipped(big.path, "too-large", "over 20 MiB", size=999, mtime_ns=2_000)
    assert await ledger.record_skipped([changed]) == [changed]
    await ledger.record_skipped([item])
    row = await ledger.get_file(big.path)
    assert row is not None
    assert (row.state, row.last_error, row.size) == ("skipped", "too-large: over 20 MiB", 999)
    assert await ledger.filter_new([big]) == []
    with pytest.raises(UnresumableRowError, match="no scan details"):
        row.to_found()  # never scanned as sendable: nothing to resume from
    smaller = ff("big.jpg", size=5)
    assert await ledger.filter_new([smaller]) == [smaller]
    assert (await ledger.counts()) == {
        "seen": 1,
        "settled": 0,
        "packed": 0,
        "uploading": 0,
        "uploaded": 0,
        "ingested": 0,
        "skipped": 0,
        "failed": 0,
    }


async def test_member_names_unique_per_batch_and_stable_across_reopen(
    backend: LedgerBackend,
) -> None:
    files = [ff(f"cam{i}/IMG_0001.JPG") for i in range(5)] + [ff("other.png")]
    async with await backend.open() as m:
        await m.filter_new(files)
        names = await m.assign_members("b1", files[:3])
        assert names[files[0].path] == "IMG_0001.JPG"
        assert len(set(names.values())) == 3
        row = await m.get_file(files[1].path)
        assert row is not None
        assert (row.member_name, row.batch_id) == (names[files[1].path], "b1")
    async with await backend.open() as m:
        again = await m.assign_members("b1", files)
        assert {p: again[p] for p in names} == names
        assert len(set(again.values())) == len(files)
        assert again[files[5].path] == "other.png"
        assert await member_path(m, "b1", names[files[2].path]) == files[2].path
        assert await member_path(m, "b1", "nope.jpg") is None
        # Another batch has its own namespace.
        other = await m.assign_members("b2", [files[4]])
        assert other[files[4].path] == "IMG_0001.JPG"


async def test_shards(ledger: Ledger) -> None:
    files = [ff(f"{i}.jpg", size=100) for i in range(4)]
    await ledger.filter_new(files)
    shard = await ledger.create_shard("b1", [f.path for f in files[:3]], size=300)
    assert (shard.state, shard.file_count, shard.size, shard.batch_id) == ("packed", 3, 300, "b1")
    in_shard = await files_of_shard(ledger, shard.shard_id)
    assert [r.path for r in in_shard] == sorted(f.path for f in files[:3])
    assert {r.state for r in in_shard} == {"packed"}
    updated = await ledger.update_shard(shard.shard_id, state="uploading", bump_attempts=True)
    assert (updated.state, updated.attempts) == ("uploading", 1)
    failed = await ledger.update_shard(shard.shard_id, state="failed", error="HTTP 500")
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", 1, "HTTP 500")
    assert await shard_of(ledger, shard.shard_id) == failed
    second = await ledger.create_shard("b2", [files[3].path], size=100)
    assert [s.shard_id for s in await ledger.list_shards(batch_id="b1")] == [shard.shard_id]
    assert [s.shard_id for s in await ledger.list_shards(states=["packed"])] == [second.shard_id]
    assert len(await ledger.list_shards()) == 2
    with pytest.raises(UnknownShardError, match="missing"):
        await ledger.update_shard("missing", state="uploaded")
    assert await shard_of(ledger, "missing") is None


async def test_batches(ledger: Ledger) -> None:
    created = await ledger.create_batch("cam-2024-06-01", "images", info={"prefix": "cam"})
    assert (created.state, created.expected_count, created.info) == ("open", 0, {"prefix": "cam"})
    assert await ledger.create_batch("cam-2024-06-01", "images") == created
    with pytest.raises(ConfigError, match="holds images"):
        await ledger.create_batch("cam-2024-06-01", "videos")
    with pytest.raises(ConfigError, match="invalid batch id"):
        await ledger.create_batch("Bad Id!", "images")
    await ledger.create_batch("vids-1", "videos")
    updated = await ledger.update_batch(
        "cam-2024-06-01", state="job_started", expected_count=512, job_id="j-cam", info={"n": 1}
    )
    assert (updated.state, updated.expected_count, updated.job_id) == ("job_started", 512, "j-cam")
    assert updated.info == {"prefix": "cam", "n": 1}
    assert await ledger.get_batch("cam-2024-06-01") == updated
    assert await ledger.get_batch("nope") is None
    assert [b.batch_id for b in await ledger.list_batches(states=["open"])] == ["vids-1"]
    assert [b.batch_id for b in await ledger.list_batches(kind="images")] == ["cam-2024-06-01"]
    assert len(await ledger.list_batches()) == 2
    with pytest.raises(UnknownBatchError, match="nope"):
        await ledger.update_batch("nope", state="sealed")
    with pytest.raises(InvalidStateError, match="batch state"):
        await ledger.update_batch("vids-1", state="weird")  # type: ignore[arg-type]


async def test_files_in_state_pages_through_everything(ledger: Ledger) -> None:
    files = [ff(f"d{i % 7}/f{i:05d}.jpg") for i in range(2600)]
    await ledger.filter_new(files)
    await ledger.mark([f.path for f in files[:1200]], "uploading", batch_id="b1")
    await ledger.mark([f.path for f in files[1200:1300]], "packed", batch_id="b2")
    got = [r async for r in ledger.files_in_state(["uploading", "packed"])]
    assert len(got) == 1300
    assert [r.state for r in got] == ["uploading"] * 1200 + ["packed"] * 100
    uploading_paths = [r.path for r in got[:1200]]
    assert uploading_paths == sorted(f.path for f in files[:1200])
    only_b2 = [r.path async for r in ledger.files_in_state(["packed", "uploading"], "b2")]
    assert only_b2 == sorted(f.path for f in files[1200:1300])
    seen = [r async for r in ledger.files_in_state(["seen"])]
    assert len(seen) == 1300
    assert (await ledger.counts("b1"))["uploading"] == 1200


async def test_downloads(ledger: Ledger) -> None:
    items = [("part-1", "a.json", 10), ("part-1", "b.json", 20), (None, "c.json", None)]
    assert await ledger.add_downloads("out-1", items) == 3
    await ledger.mark_download("out-1", "part-1", "a.json", "done", path=Path("/res/a.json"))
    assert await ledger.add_downloads("out-1", items) == 0  # known rows are kept as they are
    done = await ledger.list_downloads("out-1", states=["done"])
    assert [(d.part_name, d.file_name, d.size, d.path) for d in done] == [
        ("part-1", "a.json", 10, Path("/res/a.json"))
    ]
    pending = await ledger.list_downloads("out-1", states=["pending"])
    assert [(d.part_name, d.file_name) for d in pending] == [("", "c.json"), ("part-1", "b.json")]
    await ledger.mark_download("out-2", None, "z.json", "failed", size=5)
    [failed] = await ledger.list_downloads("out-2")
    assert (failed.state, failed.size, failed.path) == ("failed", 5, None)


async def test_webhook_events_are_recorded_once(backend: LedgerBackend) -> None:
    async with await backend.open(clock=lambda: 100.0) as m:
        assert await m.record_event("evt-1") is True
        assert await m.record_event("evt-1") is False
    async with await backend.open(clock=lambda: 200.0) as m:
        assert await m.record_event("evt-1") is False
        assert await m.record_event("evt-2") is True
    # Past evt-1's retention but not evt-2's: the retention pass forgets evt-1 only.
    async with await backend.open(clock=lambda: 150.0 + EVENT_RETENTION) as m:
        assert (await m.forget(older_than=0.0)).events == 1
        assert await m.record_event("evt-1") is True
        assert await m.record_event("evt-2") is False


async def test_recorded_events_are_forgotten_after_the_retention(backend: LedgerBackend) -> None:
    day = 24 * 3600.0
    now = 1_750_000_000.0

    def clock() -> float:
        return now

    async with await backend.open(clock=clock) as m:
        assert await m.record_event("evt-old") is True
        now += 6 * day
        assert await m.record_event("evt-recent") is True
        assert await m.record_event("evt-old") is False  # a redelivery within the retention
        now += 2 * day  # evt-old is now past the retention, evt-recent is not
        assert now - 8 * day < now - EVENT_RETENTION < now - 2 * day
        assert await m.record_event("evt-new") is True
        assert await m.record_event("evt-recent") is False
        assert await m.record_event("evt-new") is False
        assert await m.record_event("evt-old") is True  # forgotten, so taken as new


async def test_files_gone_from_the_source_are_forgotten_after_the_retention(
    backend: LedgerBackend,
) -> None:
    day = 24 * 3600.0
    retention = 3 * day
    now = 1_750_000_000.0

    def clock() -> float:
        return now

    files = [ff(f"d/{i:05d}.jpg") for i in range(2500)]  # candidates over several pages
    running = ff("running.jpg")
    on_disk = {str(f.path) for f in files[::2]}  # every other file is still in the source
    batches: list[tuple[str, list[FoundFile], BatchState]] = [
        ("b-done", files, "exported"),
        ("b-run", [running], "job_started"),  # its job is still running
    ]
    async with await backend.open(clock=clock) as m:
        await m.filter_new([*files, running])
        for batch, batch_files, state in batches:
            await m.create_batch(batch, "images")
            await m.assign_members(batch, batch_files)
            await m.create_shard(batch, [f.path for f in batch_files], size=10)
            await m.mark([f.path for f in batch_files], "ingested", batch_id=batch)
            await m.add_downloads(batch, [(None, "results.jsonl", 10)])
            await m.update_batch(batch, state=state)

        now += day  # within the retention: nothing goes, and nothing is sent again
        assert (await m.forget(now - retention, exists=on_disk.__contains__)).files == 0
        assert await m.filter_new([files[1]]) == []

        now += retention
        gone = await m.forget(now - retention, exists=on_disk.__contains__)
        assert (gone.files, gone.batches) == (1250, 0)  # b-done's files on disk refer to it
        assert await m.get_file(files[1].path) is None
        assert await m.get_file(files[0].path) is not None
        assert await m.get_file(running.path) is not None  # its batch is not done
        # Forgotten, then back: new, so it may be sent again.
        assert await m.filter_new([files[1]]) == [files[1]]

        # Once no file refers to it, the done batch goes with its shards and downloads.
        gone = await m.forget(now - retention, exists=lambda _: False)
        assert (gone.files, gone.batches, gone.shards, gone.downloads) == (1250, 1, 1, 1)
        assert await m.get_batch("b-done") is None
        assert await m.list_shards(batch_id="b-done") == []
        assert await m.list_downloads("b-done") == []
        assert await m.get_batch("b-run") is not None
        assert await m.get_file(files[1].path) is not None  # seen again, not final


async def test_invalid_states_and_kinds_are_refused_before_any_write(ledger: Ledger) -> None:
    a = ff("a.jpg")
    await ledger.filter_new([a])
    shard = await ledger.create_shard("b1", [a.path], size=10)
    with pytest.raises(InvalidStateError, match="file state"):
        await ledger.move_state(["seen", "gone"], "failed")  # type: ignore[list-item]
    with pytest.raises(InvalidStateError, match="shard state"):
        await ledger.update_shard(shard.shard_id, state="lost")  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError, match="batch kind"):
        await ledger.create_batch("b-new", "audio")  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError, match="download state"):
        await ledger.mark_download("b1", None, "x.json", "half")  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError, match="state"):
        await ledger.list_shards(states=["sent"])  # type: ignore[list-item]
    with pytest.raises(InvalidStateError, match="file state"):
        [r async for r in ledger.files_in_state(["lost"])]  # type: ignore[list-item]
    assert await shard_of(ledger, shard.shard_id) == shard
    assert await ledger.get_batch("b-new") is None
    assert await ledger.list_downloads("b1") == []
    row = await ledger.get_file(a.path)
    assert row is not None
    assert row.state == "packed"


async def test_hundred_thousand_rows_in_batched_transactions(ledger: Ledger) -> None:
    files = [ff(f"d{i // 1000}/{i}.jpg") for i in range(100_000)]
    assert len(await ledger.filter_new(files)) == 100_000
    paths = [f.path for f in files]
    assert await ledger.mark(paths, "uploaded", batch_id="big") == 100_000
    counts = await ledger.counts()
    assert (counts["uploaded"], counts["seen"]) == (100_000, 0)
    assert await ledger.filter_new(files) == []
