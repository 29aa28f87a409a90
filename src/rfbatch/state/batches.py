"""Batches and the shards packed for them.

A batch row follows one batch of the service from ``open`` to ``exported``; its ``info`` is a
JSON object that updates merge into. A shard row is one tar sent to a batch; creating it moves
its files to ``packed`` in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rfbatch.errors import ConfigError, UnknownBatchError, UnknownShardError
from rfbatch.ids import validate_batch_id
from rfbatch.state.database import Database, _check, _key, _text, _where
from rfbatch.state.records import (
    BATCH_KINDS,
    BATCH_STATES,
    SHARD_STATES,
    BatchKind,
    BatchRow,
    BatchState,
    ShardRow,
    ShardState,
)
from rfbatch.state.rows import (
    BATCH_COLUMNS,
    SHARD_COLUMNS,
    batch_row,
    shard_row,
)

_SELECT_SHARD = f"SELECT {SHARD_COLUMNS} FROM shards WHERE shard_id = ?"  # noqa: S608
_SELECT_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = ?"  # noqa: S608


def _shard(conn: sqlite3.Connection, shard_id: str) -> ShardRow | None:
    row = conn.execute(_SELECT_SHARD, (shard_id,)).fetchone()
    return shard_row(row) if row is not None else None


def _batch(conn: sqlite3.Connection, batch_id: str) -> BatchRow | None:
    row = conn.execute(_SELECT_BATCH, (batch_id,)).fetchone()
    return batch_row(row) if row is not None else None


class BatchStore(Database):
    """The ``shards`` and ``batches`` tables."""

    # -- shards -------------------------------------------------------------------------

    async def create_shard(self, batch_id: str, paths: Sequence[Path], *, size: int) -> ShardRow:
        """A new shard (state ``packed``) holding ``paths``, which move to ``packed`` with it.

        One transaction: the shard and its files' states never disagree.
        """
        shard_id = uuid.uuid4().hex
        now = self._clock()

        def write() -> ShardRow:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO shards ({SHARD_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, 'packed', ?, ?, 0, NULL, ?, ?)",
                    (shard_id, batch_id, len(paths), size, now, now),
                )
                conn.executemany(
                    "UPDATE files SET state = 'packed', shard_id = ?, batch_id = ?,"
                    " last_error = NULL, updated_at = ? WHERE path = ?",
                    [(shard_id, batch_id, now, _key(p)) for p in paths],
                )
            return ShardRow(shard_id, batch_id, "packed", len(paths), size, 0, None, now, now)

        return await self._run(write)

    async def update_shard(
        self,
        shard_id: str,
        *,
        state: ShardState | None = None,
        error: str | None = None,
        bump_attempts: bool = False,
    ) -> ShardRow:
        """Change a shard's state and error (``None`` clears it).

        Raises :class:`~rfbatch.errors.UnknownShardError` if there is no such shard.
        """
        if state is not None:
            _check(state, SHARD_STATES, "shard state")
        now = self._clock()

        def write() -> ShardRow:
            with self._tx() as conn:
                conn.execute(
                    "UPDATE shards SET state = COALESCE(?, state), last_error = ?,"
                    " attempts = attempts + ?, updated_at = ? WHERE shard_id = ?",
                    (state, _text(error), int(bump_attempts), now, shard_id),
                )
                row = _shard(conn, shard_id)
                if row is None:
                    raise UnknownShardError(f"no shard {shard_id!r} in the manifest")
                return row

        return await self._run(write)

    async def list_shards(
        self, *, batch_id: str | None = None, states: Iterable[ShardState] | None = None
    ) -> list[ShardRow]:
        where, args = _where(batch_id=batch_id, states=states, allowed=SHARD_STATES)
        sql = f"SELECT {SHARD_COLUMNS} FROM shards{where} ORDER BY created_at, shard_id"  # noqa: S608
        return await self._run(lambda: [shard_row(r) for r in self._conn.execute(sql, args)])

    # -- batches ------------------------------------------------------------------------

    async def create_batch(
        self, batch_id: str, kind: BatchKind, *, info: Mapping[str, Any] | None = None
    ) -> BatchRow:
        """Create batch ``batch_id`` (state ``open``), or return it if it exists with ``kind``.

        A batch id already used for the other kind raises :class:`ConfigError`: images and
        videos never share a batch.
        """
        validate_batch_id(batch_id)
        _check(kind, BATCH_KINDS, "batch kind")
        now = self._clock()
        info_json = json.dumps(dict(info or {}), sort_keys=True)

        def write() -> BatchRow:
            with self._tx() as conn:
                # The transaction holds the write lock: nobody can create it in between.
                found = _batch(conn, batch_id)
                if found is not None:
                    return found
                conn.execute(
                    f"INSERT INTO batches ({BATCH_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, 'open', 0, NULL, ?, ?, ?)",
                    (batch_id, kind, now, now, info_json),
                )
            return BatchRow(batch_id, kind, "open", 0, None, now, now, json.loads(info_json))

        row = await self._run(write)
        if row.kind != kind:
            raise ConfigError(f"batch {batch_id!r} holds {row.kind}, not {kind}")
        return row

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        return await self._run(lambda: _batch(self._conn, batch_id))

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        expected_count: int | None = None,
        job_id: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> BatchRow:
        """Change the given fields (``info`` is merged in).

        Raises :class:`~rfbatch.errors.UnknownBatchError` if there is no such batch.
        """
        if state is not None:
            _check(state, BATCH_STATES, "batch state")
        now = self._clock()

        def write() -> BatchRow:
            with self._tx() as conn:
                found = _batch(conn, batch_id)
                if found is None:
                    raise UnknownBatchError(f"no batch {batch_id!r} in the manifest")
                merged = {**found.info, **(info or {})}
                conn.execute(
                    "UPDATE batches SET state = COALESCE(?, state),"
                    " expected_count = COALESCE(?, expected_count), job_id = COALESCE(?, job_id),"
                    " info = ?, updated_at = ? WHERE batch_id = ?",
                    (
                        state,
                        expected_count,
                        job_id,
                        json.dumps(merged, sort_keys=True),
                        now,
                        batch_id,
                    ),
                )
                return batch_row(conn.execute(_SELECT_BATCH, (batch_id,)).fetchone())

        return await self._run(write)

    async def list_batches(
        self, *, states: Iterable[BatchState] | None = None, kind: BatchKind | None = None
    ) -> list[BatchRow]:
        """Batches, oldest first, optionally only in ``states`` and of ``kind``."""
        where, args = _where(states=states, allowed=BATCH_STATES, kind=kind)
        sql = f"SELECT {BATCH_COLUMNS} FROM batches{where} ORDER BY created_at, batch_id"  # noqa: S608
        return await self._run(lambda: [batch_row(r) for r in self._conn.execute(sql, args)])
