from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.errors import ConfigError
from rfbatch.media import FoundFile, Skipped
from rfbatch.state.manifest import DB_NAME, Manifest, SqliteManifest
from rfbatch.state.schema import SCHEMA_VERSION

ROOT = Path("/data/cams")


def ff(rel: str, size: int = 10, mtime_ns: int = 1_000, kind: str = "image") -> FoundFile:
    return FoundFile(str(ROOT / rel), ROOT, rel, size, mtime_ns, 42, kind)  # type: ignore[arg-type]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def manifest(state_dir: Path) -> AsyncIterator[SqliteManifest]:
    async with await SqliteManifest.open(state_dir) as m:
        yield m


def raw(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(state_dir / DB_NAME, isolation_level=None)


async def test_open_creates_a_versioned_wal_database(state_dir: Path) -> None:
    # Typed as the protocol: mypy checks that SqliteManifest implements all of it.
    m: Manifest = await SqliteManifest.open(state_dir)
    await m.close()
    await m.close()  # twice is fine
    conn = raw(state_dir)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"files", "members", "shards", "batches", "downloads", "webhook_events"} <= tables
    conn.close()
    with pytest.raises(RuntimeError, match="closed"):
        await m.counts()


async def test_newer_schema_is_refused(state_dir: Path) -> None:
    await (await SqliteManifest.open(state_dir)).close()
    conn = raw(state_dir)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        await SqliteManifest.open(state_dir)


async def test_state_dir_inside_a_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    with pytest.raises(ConfigError, match="inside source folder"):
        await SqliteManifest.open(source / ".rfbatch", source_roots=[source])
    with pytest.raises(ConfigError, match="inside source folder"):
        await SqliteManifest.open(source, source_roots=[source])
    assert list(source.iterdir()) == []
    m = await SqliteManifest.open(tmp_path / "state", source_roots=[source])
    await m.close()


async def test_second_process_on_the_same_state_dir_is_refused(state_dir: Path) -> None:
    first = await SqliteManifest.open(state_dir)
    with pytest.raises(ConfigError, match="in use"):
        await SqliteManifest.open(state_dir)
    await first.close()
    await (await SqliteManifest.open(state_dir)).close()


async def test_filter_new_returns_what_must_be_sent(manifest: SqliteManifest) -> None:
    a, b, c, d = ff("a.jpg"), ff("b.jpg"), ff("c.jpg"), ff("d.jpg")
    assert await manifest.filter_new([a, b, c, d, a]) == [a, b, c, d]
    assert (await manifest.counts())["seen"] == 4
    # Nothing sent yet: still to send.
    assert await manifest.filter_new([a, b]) == [a, b]
    await manifest.mark([a.path], "uploaded")
    await manifest.mark([b.path], "packed")
    await manifest.mark([c.path], "skipped", error="too-large")
    await manifest.mark([d.path], "failed", error="boom")
    assert await manifest.filter_new([a, b, c, d]) == [d]


async def test_changed_file_is_sent_again_and_unchanged_is_not(manifest: SqliteManifest) -> None:
    old = ff("cam/x.jpg", size=10, mtime_ns=1)
    await manifest.filter_new([old])
    shard = await manifest.create_shard("batch-1", [old.path], size=10)
    await manifest.mark([old.path], "uploaded")
    assert await manifest.filter_new([old]) == []
    grown = ff("cam/x.jpg", size=11, mtime_ns=1)
    touched = ff("cam/x.jpg", size=11, mtime_ns=2)
    assert await manifest.filter_new([grown]) == [grown]
    row = await manifest.get_file(old.path)
    assert row is not None
    assert (row.state, row.size, row.batch_id, row.shard_id) == ("seen", 11, None, None)
    await manifest.mark([old.path], "ingested")
    assert await manifest.filter_new([grown]) == []
    assert await manifest.filter_new([touched]) == [touched]
    # The old shard's late success must not cover the new version.
    assert await manifest.mark([old.path], "uploaded", only_shard=shard.shard_id) == 0
    row = await manifest.get_file(old.path)
    assert row is not None
    assert row.state == "seen"


async def test_mark_sets_fields_and_counts_attempts(manifest: SqliteManifest) -> None:
    files = [ff(f"{i}.jpg") for i in range(3)]
    await manifest.filter_new(files)
    paths = [f.path for f in files]
    assert await manifest.mark([*paths, ROOT / "unknown.jpg"], "uploading", batch_id="b1") == 3
    await manifest.mark(paths[:1], "failed", error="HTTP 503")
    await manifest.mark(paths[:1], "uploading")
    first = await manifest.get_file(paths[0])
    assert first is not None
    assert (first.state, first.batch_id, first.attempts, first.last_error) == (
        "uploading",
        "b1",
        2,
        None,
    )
    await manifest.mark(paths[:1], "failed", error="HTTP 503")
    first = await manifest.get_file(paths[0])
    assert first is not None
    assert first.last_error == "HTTP 503"
    assert first.to_found() == files[0]
    with pytest.raises(ValueError, match="file state"):
        await manifest.mark(paths, "lost")  # type: ignore[arg-type]
    assert await manifest.get_file(ROOT / "unknown.jpg") is None


async def test_record_skipped(manifest: SqliteManifest) -> None:
    big = ff("big.jpg", size=999)
    await manifest.record_skipped(
        [Skipped(big.path, "too-large", "over 20 MiB", size=999, mtime_ns=1_000, kind="image")]
    )
    row = await manifest.get_file(big.path)
    assert row is not None
    assert (row.state, row.last_error, row.size) == ("skipped", "too-large: over 20 MiB", 999)
    assert await manifest.filter_new([big]) == []
    smaller = ff("big.jpg", size=5)
    assert await manifest.filter_new([smaller]) == [smaller]
    assert (await manifest.counts()) == {
        "seen": 1,
        "settled": 0,
        "packed": 0,
        "uploading": 0,
        "uploaded": 0,
        "ingested": 0,
        "skipped": 0,
        "failed": 0,
    }


async def test_member_names_unique_per_batch_and_stable_across_reopen(state_dir: Path) -> None:
    files = [ff(f"cam{i}/IMG_0001.JPG") for i in range(5)] + [ff("other.png")]
    async with await SqliteManifest.open(state_dir) as m:
        await m.filter_new(files)
        names = await m.assign_members("b1", files[:3])
        assert names[files[0].path] == "IMG_0001.JPG"
        assert len(set(names.values())) == 3
        row = await m.get_file(files[1].path)
        assert row is not None
        assert (row.member_name, row.batch_id) == (names[files[1].path], "b1")
    async with await SqliteManifest.open(state_dir) as m:
        again = await m.assign_members("b1", files)
        assert {p: again[p] for p in names} == names
        assert len(set(again.values())) == len(files)
        assert again[files[5].path] == "other.png"
        assert await m.member_path("b1", names[files[2].path]) == files[2].path
        assert await m.member_path("b1", "nope.jpg") is None
        # Another batch has its own namespace.
        other = await m.assign_members("b2", [files[4]])
        assert other[files[4].path] == "IMG_0001.JPG"


async def test_shards(manifest: SqliteManifest) -> None:
    files = [ff(f"{i}.jpg", size=100) for i in range(4)]
    await manifest.filter_new(files)
    shard = await manifest.create_shard("b1", [f.path for f in files[:3]], size=300)
    assert (shard.state, shard.file_count, shard.size, shard.batch_id) == ("packed", 3, 300, "b1")
    in_shard = await manifest.shard_files(shard.shard_id)
    assert [r.path for r in in_shard] == sorted(f.path for f in files[:3])
    assert {r.state for r in in_shard} == {"packed"}
    updated = await manifest.update_shard(shard.shard_id, state="uploading", bump_attempts=True)
    assert (updated.state, updated.attempts) == ("uploading", 1)
    failed = await manifest.update_shard(shard.shard_id, state="failed", error="HTTP 500")
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", 1, "HTTP 500")
    assert await manifest.get_shard(shard.shard_id) == failed
    second = await manifest.create_shard("b2", [files[3].path], size=100)
    assert [s.shard_id for s in await manifest.list_shards(batch_id="b1")] == [shard.shard_id]
    assert [s.shard_id for s in await manifest.list_shards(states=["packed"])] == [second.shard_id]
    assert len(await manifest.list_shards()) == 2
    with pytest.raises(KeyError):
        await manifest.update_shard("missing", state="uploaded")
    assert await manifest.get_shard("missing") is None


async def test_batches(manifest: SqliteManifest) -> None:
    created = await manifest.create_batch("cam-2024-06-01", "images", info={"prefix": "cam"})
    assert (created.state, created.expected_count, created.info) == ("open", 0, {"prefix": "cam"})
    assert await manifest.create_batch("cam-2024-06-01", "images") == created
    with pytest.raises(ConfigError, match="holds images"):
        await manifest.create_batch("cam-2024-06-01", "videos")
    with pytest.raises(ConfigError, match="invalid batch id"):
        await manifest.create_batch("Bad Id!", "images")
    await manifest.create_batch("vids-1", "videos")
    updated = await manifest.update_batch(
        "cam-2024-06-01", state="job_started", expected_count=512, job_id="j-cam", info={"n": 1}
    )
    assert (updated.state, updated.expected_count, updated.job_id) == ("job_started", 512, "j-cam")
    assert updated.info == {"prefix": "cam", "n": 1}
    assert await manifest.get_batch("cam-2024-06-01") == updated
    assert await manifest.get_batch("nope") is None
    assert [b.batch_id for b in await manifest.list_batches(states=["open"])] == ["vids-1"]
    assert [b.batch_id for b in await manifest.list_batches(kind="images")] == ["cam-2024-06-01"]
    assert len(await manifest.list_batches()) == 2
    with pytest.raises(KeyError):
        await manifest.update_batch("nope", state="sealed")
    with pytest.raises(ValueError, match="batch state"):
        await manifest.update_batch("vids-1", state="weird")  # type: ignore[arg-type]


async def test_files_in_state_pages_through_everything(manifest: SqliteManifest) -> None:
    files = [ff(f"d{i % 7}/f{i:05d}.jpg") for i in range(2600)]
    await manifest.filter_new(files)
    await manifest.mark([f.path for f in files[:1200]], "uploading", batch_id="b1")
    await manifest.mark([f.path for f in files[1200:1300]], "packed", batch_id="b2")
    got = [r async for r in manifest.files_in_state(["uploading", "packed"])]
    assert len(got) == 1300
    assert [r.state for r in got] == ["uploading"] * 1200 + ["packed"] * 100
    uploading_paths = [r.path for r in got[:1200]]
    assert uploading_paths == sorted(f.path for f in files[:1200])
    only_b2 = [r.path async for r in manifest.files_in_state(["packed", "uploading"], "b2")]
    assert only_b2 == sorted(f.path for f in files[1200:1300])
    seen = [r async for r in manifest.files_in_state(["seen"])]
    assert len(seen) == 1300
    assert (await manifest.counts("b1"))["uploading"] == 1200


async def test_downloads(manifest: SqliteManifest) -> None:
    items = [("part-1", "a.json", 10), ("part-1", "b.json", 20), (None, "c.json", None)]
    assert await manifest.add_downloads("out-1", items) == 3
    await manifest.mark_download("out-1", "part-1", "a.json", "done", path=Path("/res/a.json"))
    assert await manifest.add_downloads("out-1", items) == 0  # known rows are kept as they are
    done = await manifest.list_downloads("out-1", states=["done"])
    assert [(d.part_name, d.file_name, d.size, d.path) for d in done] == [
        ("part-1", "a.json", 10, Path("/res/a.json"))
    ]
    pending = await manifest.list_downloads("out-1", states=["pending"])
    assert [(d.part_name, d.file_name) for d in pending] == [("", "c.json"), ("part-1", "b.json")]
    await manifest.mark_download("out-2", None, "z.json", "failed", size=5)
    [failed] = await manifest.list_downloads("out-2")
    assert (failed.state, failed.size, failed.path) == ("failed", 5, None)


async def test_webhook_events_are_recorded_once(state_dir: Path) -> None:
    async with await SqliteManifest.open(state_dir, clock=lambda: 100.0) as m:
        assert await m.record_event("evt-1") is True
        assert await m.record_event("evt-1") is False
    async with await SqliteManifest.open(state_dir, clock=lambda: 200.0) as m:
        assert await m.record_event("evt-1") is False
        assert await m.record_event("evt-2") is True
        assert await m.prune_events(older_than=150.0) == 1
        assert await m.record_event("evt-1") is True


async def test_hundred_thousand_rows_in_batched_transactions(manifest: SqliteManifest) -> None:
    files = [ff(f"d{i // 1000}/{i}.jpg") for i in range(100_000)]
    assert len(await manifest.filter_new(files)) == 100_000
    paths = [f.path for f in files]
    assert await manifest.mark(paths, "uploaded", batch_id="big") == 100_000
    counts = await manifest.counts()
    assert (counts["uploaded"], counts["seen"]) == (100_000, 0)
    assert await manifest.filter_new(files) == []
