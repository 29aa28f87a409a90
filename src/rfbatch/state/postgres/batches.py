"""Batches and their shards on PostgreSQL (see :mod:`rfbatch.state.batches`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rfbatch.errors import ConfigError, UnknownBatchError, UnknownShardError
from rfbatch.ids import validate_batch_id
from rfbatch.state.postgres.connection import PgDatabase, _key, _text
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
    check,
    known_states,
    shard_row,
)

_SELECT_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = $1"  # noqa: S608
_UPDATE_SHARD = (
    "UPDATE shards SET state = COALESCE($1, state), last_error = $2, attempts = attempts + $3,"  # noqa: S608
    f" updated_at = $4 WHERE shard_id = $5 RETURNING {SHARD_COLUMNS}"
)
_UPDATE_BATCH = (
    "UPDATE batches SET state = COALESCE($1, state), expected_count = COALESCE($2,"  # noqa: S608
    " expected_count), job_id = COALESCE($3, job_id), info = $4, updated_at = $5"
    f" WHERE batch_id = $6 RETURNING {BATCH_COLUMNS}"
)


def _where(column_values: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``WHERE a = $1 AND b = ANY($2)``-style filters for the values that are given."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in column_values:
        if value is None:
            continue
        args.append(value)
        if isinstance(value, list):
            clauses.append(f"{column} = ANY(${len(args)}::text[])")
        else:
            clauses.append(f"{column} = ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class PgBatchStore(PgDatabase):
    """The ``shards`` and ``batches`` tables."""

    # -- shards -------------------------------------------------------------------------

    async def create_shard(self, batch_id: str, paths: Sequence[Path], *, size: int) -> ShardRow:
        shard_id = uuid.uuid4().hex
        now = self._clock()
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO shards ({SHARD_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, 'packed', $3, $4, 0, NULL, $5, $5)",
                shard_id,
                batch_id,
                len(paths),
                size,
                now,
            )
            await conn.execute(
                "UPDATE files SET state = 'packed', shard_id = $1, batch_id = $2,"
                " last_error = NULL, updated_at = $3 FROM unnest($4::bytea[]) AS t(p)"
                " WHERE files.path = t.p",
                shard_id,
                batch_id,
                now,
                [_key(p) for p in paths],
            )
        return ShardRow(shard_id, batch_id, "packed", len(paths), size, 0, None, now, now)

    async def update_shard(
        self,
        shard_id: str,
        *,
        state: ShardState | None = None,
        error: str | None = None,
        bump_attempts: bool = False,
    ) -> ShardRow:
        if state is not None:
            check(state, SHARD_STATES, "shard state")
        async with self._tx() as conn:
            row = await conn.fetchrow(
                _UPDATE_SHARD,
                state,
                _text(error),
                int(bump_attempts),
                self._clock(),
                shard_id,
            )
        if row is None:
            raise UnknownShardError(f"no shard {shard_id!r} in the ledger")
        return shard_row(row)

    async def list_shards(
        self, *, batch_id: str | None = None, states: Iterable[ShardState] | None = None
    ) -> list[ShardRow]:
        wanted = known_states(states, SHARD_STATES, "shard state") if states is not None else None
        where, args = _where([("batch_id", batch_id), ("state", wanted)])
        sql = f"SELECT {SHARD_COLUMNS} FROM shards{where} ORDER BY created_at, shard_id"  # noqa: S608
        return [shard_row(r) for r in await self._fetch(sql, *args)]

    # -- batches ------------------------------------------------------------------------

    async def create_batch(
        self, batch_id: str, kind: BatchKind, *, info: Mapping[str, Any] | None = None
    ) -> BatchRow:
        validate_batch_id(batch_id)
        check(kind, BATCH_KINDS, "batch kind")
        now = self._clock()
        info_json = json.dumps(dict(info or {}), sort_keys=True)
        async with self._tx() as conn:
            # ON CONFLICT: a worker creating the same batch at the same time finds it made.
            await conn.execute(
                f"INSERT INTO batches ({BATCH_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, 'open', 0, NULL, $3, $3, $4) ON CONFLICT DO NOTHING",
                batch_id,
                kind,
                now,
                info_json,
            )
            found = await conn.fetchrow(_SELECT_BATCH, batch_id)
        assert found is not None  # inserted, or there already, in this transaction
        row = batch_row(found)
        if row.kind != kind:
            raise ConfigError(f"batch {batch_id!r} holds {row.kind}, not {kind}")
        return row

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        rows = await self._fetch(_SELECT_BATCH, batch_id)
        return batch_row(rows[0]) if rows else None

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        expected_count: int | None = None,
        job_id: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> BatchRow:
        if state is not None:
            check(state, BATCH_STATES, "batch state")
        async with self._tx() as conn:
            found = await conn.fetchrow(f"{_SELECT_BATCH} FOR UPDATE", batch_id)
            if found is None:
                raise UnknownBatchError(f"no batch {batch_id!r} in the ledger")
            merged = {**batch_row(found).info, **(info or {})}
            row = await conn.fetchrow(
                _UPDATE_BATCH,
                state,
                expected_count,
                job_id,
                json.dumps(merged, sort_keys=True),
                self._clock(),
                batch_id,
            )
        assert row is not None  # locked above
        return batch_row(row)

    async def list_batches(
        self, *, states: Iterable[BatchState] | None = None, kind: BatchKind | None = None
    ) -> list[BatchRow]:
        wanted = known_states(states, BATCH_STATES, "batch state") if states is not None else None
        where, args = _where([("state", wanted), ("kind", kind)])
        sql = f"SELECT {BATCH_COLUMNS} FROM batches{where} ORDER BY created_at, batch_id"  # noqa: S608
        return [batch_row(r) for r in await self._fetch(sql, *args)]
