"""What only the SQLite ledger does: a file in a state directory, locked, versioned, bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rfbatch.errors import ConfigError
from rfbatch.state.ledger import EVENT_RETENTION, Ledger
from rfbatch.state.manifest import DB_NAME, SqliteManifest
from rfbatch.state.schema import SCHEMA_VERSION


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def raw(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(state_dir / DB_NAME, isolation_level=None)


async def test_open_creates_a_versioned_wal_database(state_dir: Path) -> None:
    # Typed as the interface: mypy checks that SqliteManifest implements all of it.
    m: Ledger = await SqliteManifest.open(state_dir)
    await m.close()
    conn = raw(state_dir)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"files", "members", "shards", "batches", "downloads", "webhook_events"} <= tables
    conn.close()


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


async def test_a_daemon_recording_events_for_months_keeps_a_bounded_table(
    state_dir: Path,
) -> None:
    hour = 3600.0
    now = 1_750_000_000.0

    def clock() -> float:
        return now

    async with await SqliteManifest.open(state_dir, clock=clock) as m:
        for i in range(90 * 24):  # one event an hour for 90 days
            assert await m.record_event(f"evt-{i}") is True
            now += hour
        assert await m.record_event(f"evt-{90 * 24 - 1}") is False  # the last one is still known
    conn = raw(state_dir)
    kept = [r[0] for r in conn.execute("SELECT received_at FROM webhook_events")]
    conn.close()
    # About one retention's worth (plus at most one prune interval), not 90 days' worth.
    window = EVENT_RETENTION / hour
    assert window <= len(kept) <= window + 2
    assert min(kept) >= now - EVENT_RETENTION - 2 * hour
