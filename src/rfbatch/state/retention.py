"""Forgetting: rows of files that left the source, and of batches long done, after a retention.

A daemon runs for months over a source whose old files are deleted (camera storage) or moved
away (``[daemon] after_ingest``). Without pruning the manifest would keep a row for every file
it ever saw. :meth:`RetentionStore.forget` removes, in one pass:

* **files** in a final state (``uploaded``, ``ingested``, ``skipped``, ``failed``) whose last
  change is older than the cutoff, whose batch is done (or who have none), and whose path no
  longer exists — with their tar member names;
* **batches** in a done state, older than the cutoff, that no file row refers to any more —
  with their shards, member names and downloads;
* **webhook event ids** older than their own retention
  (:data:`~rfbatch.state.ledger.EVENT_RETENTION`).

Then ``PRAGMA incremental_vacuum`` gives the freed pages back to the file system (the database
is opened in ``auto_vacuum = INCREMENTAL`` mode), so the file's size follows the live tree.

The guarantee: an unchanged file (same path, size and mtime) is never sent again within the
retention of its last change. Only after that, and only if it had left the source when a pass
ran, is it forgotten; if it then comes back it is new and is sent again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from rfbatch.state.database import Database, Key, _chunks, _marks
from rfbatch.state.events import _prune as _prune_events
from rfbatch.state.ledger import EVENT_RETENTION
from rfbatch.state.records import DONE_BATCH_STATES, FINAL_FILE_STATES, BatchState, Forgotten
from rfbatch.state.rows import forget_gone

_PAGE = 1000


def _exists(path: str) -> bool:
    return os.path.lexists(path)


class RetentionStore(Database):
    """Pruning of files gone from the source and of batches long done; incremental vacuum."""

    async def forget(
        self,
        older_than: float,
        *,
        done_batch_states: Iterable[BatchState] = DONE_BATCH_STATES,
        exists: Callable[[str], bool] = _exists,
    ) -> Forgotten:
        """Forget what has left the source and is done, last changed before ``older_than``.

        ``done_batch_states``: batch states with nothing left to do under the caller's settings
        (a daemon without a workflow is done with a batch once ingest is confirmed).
        ``exists`` tells whether a path is still in the source; it runs in a worker thread, never
        in the database thread, so a slow disk does not hold the manifest.
        """
        done = list(dict.fromkeys(done_batch_states))
        bytes_before = await self._run(self._db_bytes)
        first: Key = ""
        files = await forget_gone(
            lambda after: self._run(partial(self._candidates, older_than, done, after)),
            lambda gone: self._run(partial(self._forget_files, gone, older_than)),
            exists,
            first,
            _PAGE,
        )
        batches, shards, downloads = await self._run(lambda: self._forget_batches(older_than, done))
        events = await self._run(lambda: self._forget_events(self._clock() - EVENT_RETENTION))
        if files or batches or events:
            await self._run(self._vacuum)
        bytes_after = await self._run(self._db_bytes)
        return Forgotten(files, batches, shards, downloads, events, bytes_before, bytes_after)

    def _candidates(self, older_than: float, done: Sequence[str], after: Key) -> list[Key]:
        sql = (
            "SELECT path FROM files WHERE path > ?"  # noqa: S608
            f" AND state IN ({_marks(len(FINAL_FILE_STATES))}) AND updated_at < ?"
            " AND (batch_id IS NULL OR NOT EXISTS (SELECT 1 FROM batches b"
            f" WHERE b.batch_id = files.batch_id AND b.state NOT IN ({_marks(len(done))})))"
            " ORDER BY path LIMIT ?"
        )
        args = (after, *FINAL_FILE_STATES, older_than, *done, _PAGE)
        return [r[0] for r in self._conn.execute(sql, args)]

    def _forget_files(self, keys: list[Key], older_than: float) -> int:
        # The conditions are checked again: a file may have come back and changed meanwhile.
        forgotten = 0
        with self._tx() as conn:
            for chunk in _chunks(keys):
                marks = _marks(len(chunk))
                cursor = conn.execute(
                    f"DELETE FROM files WHERE path IN ({marks}) AND updated_at < ?"  # noqa: S608
                    f" AND state IN ({_marks(len(FINAL_FILE_STATES))})",
                    (*chunk, older_than, *FINAL_FILE_STATES),
                )
                forgotten += cursor.rowcount
                conn.execute(
                    f"DELETE FROM members WHERE path IN ({marks})"  # noqa: S608
                    " AND NOT EXISTS (SELECT 1 FROM files f WHERE f.path = members.path)",
                    chunk,
                )
        return forgotten

    def _forget_batches(self, older_than: float, done: Sequence[str]) -> tuple[int, int, int]:
        with self._tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT batch_id FROM batches WHERE updated_at < ?"  # noqa: S608
                    f" AND state IN ({_marks(len(done))}) AND NOT EXISTS"
                    " (SELECT 1 FROM files f WHERE f.batch_id = batches.batch_id)",
                    (older_than, *done),
                )
            ]
            shards = downloads = 0
            for chunk in _chunks(ids):
                marks = _marks(len(chunk))
                shards += _delete(conn, "shards", marks, chunk)
                downloads += _delete(conn, "downloads", marks, chunk)
                _delete(conn, "members", marks, chunk)
                _delete(conn, "batches", marks, chunk)
        return len(ids), shards, downloads

    def _forget_events(self, older_than: float) -> int:
        with self._tx() as conn:
            return _prune_events(conn, older_than)

    def _vacuum(self) -> None:
        # Outside a transaction: it frees every page on the freelist back to the file system.
        # Through executescript: sqlite3's execute steps the pragma once, freeing one page.
        self._conn.executescript("PRAGMA incremental_vacuum;")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _db_bytes(self) -> int:
        """The manifest's size on disk: the database file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(f"{self.db_path}{suffix}")
        return total


def _delete(conn: sqlite3.Connection, table: str, marks: str, ids: Sequence[str]) -> int:
    sql = f"DELETE FROM {table} WHERE batch_id IN ({marks})"  # noqa: S608 fixed table names
    return conn.execute(sql, ids).rowcount
