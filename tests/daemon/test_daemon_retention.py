"""``rfbatch run`` forgets files that left the source once ``[state] retention_days`` is past."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rfbatch.emulator import Emulator
from rfbatch.state.database import DB_NAME
from tests.daemon.support import daemon, write_config
from tests.e2e.support import make_tree
from tests.waiting import wait_for


def rows(state_dir: Path, table: str) -> int:
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


async def test_files_deleted_after_ingest_are_forgotten_after_the_retention(
    emulator: Emulator, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    config = write_config(
        tmp_path / "c.toml",
        emulator,
        tmp_path,
        daemon={"after_ingest": "delete", "batch_window_seconds": 1.0},
        state={"dir": str(state_dir), "retention_days": 2.0 / 86400},  # two seconds
    )
    async with daemon(config, emulator, state_dir) as d:
        make_tree(tmp_path / "src", 8)

        def forgotten() -> tuple[int, int]:
            events = d.saw("state.forgotten")
            return sum(e["files"] for e in events), sum(e["batches"] for e in events)

        await wait_for(lambda: forgotten() == (8, 1), "forgotten() == (8, 1)")
        assert await d.terminate() == 0
    # The manifest keeps nothing of what left the source, and its file gave the pages back.
    for table in ("files", "members", "shards", "batches"):
        assert rows(state_dir, table) == 0, table
    event = d.saw("state.forgotten")[-1]
    assert event["bytes_after"] <= event["bytes_before"]
