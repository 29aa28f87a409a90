"""The manifest after a crash holds exactly what was committed, nothing half-written."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from rfbatch.media import FoundFile
from rfbatch.state.manifest import DB_NAME, SqliteManifest

ROOT = Path("/data/cams")

# The start of every child process script: argv[2] files under /data/cams, none recorded yet.
CHILD_PRELUDE = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from pathlib import Path
    import anyio
    from rfbatch.media import FoundFile
    from rfbatch.state.manifest import DB_NAME, SqliteManifest

    state = Path(sys.argv[1])
    root = Path("/data/cams")
    files = [
        FoundFile(str(root / f"{i}.jpg"), root, f"{i}.jpg", 5, 7, 1, "image")
        for i in range(int(sys.argv[2]))
    ]
    """
)

# Runs in a child process over 50 files: commits some work, leaves more uncommitted, then
# dies by SIGKILL.
KILLED_MIDWAY = textwrap.dedent(
    """
    async def main() -> None:
        m = await SqliteManifest.open(state)
        await m.filter_new(files)
        await m.mark([f.path for f in files[:20]], "uploaded", batch_id="b1")
        await m.assign_members("b1", files[:20])
        assert await m.record_event("evt-1")
        # A writer caught mid-transaction: begun, written, never committed.
        side = sqlite3.connect(state / DB_NAME, isolation_level=None)
        side.execute("BEGIN IMMEDIATE")
        side.execute("UPDATE files SET state = 'failed'")
        side.execute("INSERT INTO webhook_events VALUES ('evt-ghost', 0)")
        os.kill(os.getpid(), signal.SIGKILL)

    anyio.run(main)
    """
)

# Runs in a child process over 20000 files: flips every row between two states, one
# transaction per flip, until it is killed.
FLIPPING = textwrap.dedent(
    """
    async def main() -> None:
        m = await SqliteManifest.open(state)
        await m.filter_new(files)
        paths = [f.path for f in files]
        flips = 0
        while True:
            await m.mark(paths, "uploading" if flips % 2 else "uploaded")
            flips += 1
            if flips == 2:
                print("ready", flush=True)

    anyio.run(main)
    """
)


def run_child(script: str, state_dir: Path, files: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + script, str(state_dir), str(files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_sigkill_keeps_committed_and_drops_uncommitted(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    child = run_child(KILLED_MIDWAY, state_dir, 50)
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err

    # The lock died with the process: a restart opens the manifest at once.
    async with await SqliteManifest.open(state_dir) as m:
        counts = await m.counts()
        assert (counts["uploaded"], counts["seen"], counts["failed"]) == (20, 30, 0)
        assert await m.record_event("evt-1") is False
        assert await m.record_event("evt-ghost") is True
        names = await m.assign_members(
            "b1", [FoundFile(str(ROOT / "3.jpg"), ROOT, "3.jpg", 5, 7, 1, "image")]
        )
        assert names == {ROOT / "3.jpg": "3.jpg"}


async def test_connection_closed_without_commit_loses_only_that_transaction(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    files = [
        FoundFile(str(ROOT / f"{i}.jpg"), ROOT, f"{i}.jpg", 5, 7, 1, "image") for i in range(10)
    ]
    async with await SqliteManifest.open(state_dir) as m:
        await m.filter_new(files)
        await m.mark([f.path for f in files[:4]], "ingested")
    side = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    side.execute("BEGIN")
    side.execute("DELETE FROM files")
    side.close()
    async with await SqliteManifest.open(state_dir) as m:
        counts = await m.counts()
        assert (counts["ingested"], counts["seen"]) == (4, 6)


def test_kill_during_big_transactions_never_leaves_a_half_applied_one(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    child = run_child(FLIPPING, state_dir, 20000)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.kill()
        child.communicate(timeout=60)
    conn = sqlite3.connect(state_dir / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    states = conn.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall()
    conn.close()
    # Every flip is one transaction over all 20,000 rows: all or nothing.
    assert len(states) == 1
    assert states[0][0] in ("uploaded", "uploading")
    assert states[0][1] == 20000
