"""Forgetting on PostgreSQL (see :mod:`rfbatch.state.retention` for what and why).

The same passes as SQLite's; the space freed is left to PostgreSQL's autovacuum, which reuses
it for new rows, so the tables' size follows the live tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from rfbatch.state.ledger import EVENT_RETENTION
from rfbatch.state.postgres.connection import PgDatabase, _count
from rfbatch.state.postgres.downloads import prune_events
from rfbatch.state.records import DONE_BATCH_STATES, FINAL_FILE_STATES, BatchState, Forgotten
from rfbatch.state.rows import forget_gone

_PAGE = 1000
_FINAL = list(FINAL_FILE_STATES)


class PgRetentionStore(PgDatabase):
    """Pruning of files gone from the source and of batches long done."""

    async def forget(
        self,
        older_than: float,
        *,
        done_batch_states: Iterable[BatchState] = DONE_BATCH_STATES,
        exists: Callable[[str], bool] = os.path.lexists,
    ) -> Forgotten:
        done = list(dict.fromkeys(done_batch_states))
        bytes_before = await self._bytes()
        files = await forget_gone(
            lambda after: self._candidates(older_than, done, after),
            lambda gone: self._forget_files(gone, older_than),
            exists,
            b"",
            _PAGE,
        )
        async with self._tx() as conn:
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT batch_id FROM batches WHERE updated_at < $1"
                    " AND state = ANY($2::text[]) AND NOT EXISTS"
                    " (SELECT 1 FROM files f WHERE f.batch_id = batches.batch_id)",
                    older_than,
                    done,
                )
            ]
            counts = {}
            for table in ("shards", "downloads", "members", "batches"):
                counts[table] = _count(
                    await conn.execute(
                        f"DELETE FROM {table} WHERE batch_id = ANY($1::text[])",  # noqa: S608
                        ids,
                    )
                )
            events = await prune_events(conn, self._clock() - EVENT_RETENTION)
        bytes_after = await self._bytes()
        return Forgotten(
            files,
            len(ids),
            counts["shards"],
            counts["downloads"],
            events,
            bytes_before,
            bytes_after,
        )

    async def _candidates(
        self, older_than: float, done: Sequence[str], after: bytes
    ) -> list[bytes]:
        rows = await self._fetch(
            "SELECT path FROM files WHERE path > $1 AND state = ANY($2::text[])"
            " AND updated_at < $3 AND (batch_id IS NULL OR NOT EXISTS (SELECT 1"
            " FROM batches b WHERE b.batch_id = files.batch_id"
            " AND b.state != ALL($4::text[]))) ORDER BY path LIMIT $5",
            after,
            _FINAL,
            older_than,
            done,
            _PAGE,
        )
        return [bytes(r[0]) for r in rows]

    async def _forget_files(self, gone: list[bytes], older_than: float) -> int:
        async with self._tx() as conn:
            # Checked again: a file may have come back and changed meanwhile.
            forgotten = _count(
                await conn.execute(
                    "DELETE FROM files USING unnest($1::bytea[]) AS t(p)"
                    " WHERE files.path = t.p AND updated_at < $2 AND state = ANY($3::text[])",
                    gone,
                    older_than,
                    _FINAL,
                )
            )
            await conn.execute(
                "DELETE FROM members USING unnest($1::bytea[]) AS t(p) WHERE members.path = t.p"
                " AND NOT EXISTS (SELECT 1 FROM files f WHERE f.path = members.path)",
                gone,
            )
        return forgotten

    async def _bytes(self) -> int:
        """The ledger's tables and indexes on disk."""
        rows = await self._fetch(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
        )
        return int(rows[0][0])
