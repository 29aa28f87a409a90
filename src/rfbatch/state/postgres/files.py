"""Files and their tar member names on PostgreSQL (see :mod:`rfbatch.state.files`).

Many rows go per statement, each joined to ``unnest`` of arrays: so a scan's chunk of files
costs a few round trips, not one per file. Never ``path = ANY($1)`` of a long array: on a table
whose statistics are not yet gathered the planner compares every row with every element (a
rescan of 100,000 files took 90 s that way, 1 s joined).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rfbatch.media import FoundFile, Skipped
from rfbatch.member_names import member_name
from rfbatch.state.postgres.connection import (
    PgDatabase,
    _count,
    _key,
    _text,
    claimable,
)
from rfbatch.state.records import DONE_STATES, FILE_STATES, IN_FLIGHT_STATES, FileRow, FileState
from rfbatch.state.rows import FILE_COLUMNS, check, file_row, known_states

_PAGE = 1000  # rows per files_in_state page
_CHUNK = 1000  # files per lookup


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows turned into one list per column, for ``unnest``."""
    return [[row[i] for row in rows] for i in range(width)]


def _file_values(key: bytes, f: FoundFile) -> tuple[Any, ...]:
    """A ``files`` row's columns path .. kind, as the INSERT and the reset UPDATE take them."""
    return (key, _key(f.root), _key(f.rel), f.size, f.mtime_ns, f.inode, f.kind)


class _Unknown(Exception):
    """A member name :func:`member_name` asked about that has not been looked up yet."""

    def __init__(self, name: str) -> None:
        self.name = name


class PgFileStore(PgDatabase):
    """The ``files`` and ``members`` tables."""

    async def filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None = None
    ) -> list[FoundFile]:
        return await self._retrying(lambda: self._filter_new(files, batch_of))

    async def _filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None
    ) -> list[FoundFile]:
        # A fleet's workers all scan the same tree: a file is returned only to the worker that
        # claims it (``owner``), by the statement that writes it, so of two workers that see one
        # file at once exactly one sends it. Rows go in path order: two workers writing
        # overlapping chunks then lock them in one order and never deadlock each other.
        now = self._clock()
        wanted: list[tuple[bytes, FoundFile]] = []
        inserts: list[tuple[Any, ...]] = []
        resets: list[tuple[Any, ...]] = []
        refreshes: list[tuple[Any, ...]] = []
        handled: set[bytes] = set()
        claimed: set[bytes] = set()
        async with self._tx() as conn:
            for start in range(0, len(files), _CHUNK):
                chunk = files[start : start + _CHUNK]
                keys = [_key(f.location) for f in chunk]
                known = {
                    bytes(r[0]): r[1:]
                    for r in await conn.fetch(
                        "SELECT f.path, f.size, f.mtime_ns, f.state, f.batch_id"
                        " FROM unnest($1::bytea[]) AS t(p) JOIN files f ON f.path = t.p",
                        keys,
                    )
                }
                for key, f in zip(keys, chunk, strict=True):
                    if key in handled:
                        continue
                    handled.add(key)
                    row = known.get(key)
                    if row is None:
                        inserts.append(_file_values(key, f))
                        wanted.append((key, f))
                        continue
                    size, mtime_ns, state, batch_id = row
                    if (size, mtime_ns) != (f.size, f.mtime_ns) or (
                        batch_of is not None
                        and state in DONE_STATES
                        and state != "skipped"
                        and batch_id != batch_of(f)
                    ):
                        resets.append(_file_values(key, f))
                        wanted.append((key, f))
                    elif state in DONE_STATES or state in IN_FLIGHT_STATES:
                        continue  # a rescan's common case: nothing built, nothing written
                    else:
                        refreshes.append((key, _key(f.root), _key(f.rel), f.inode, f.kind))
                        wanted.append((key, f))
            if inserts:
                inserts.sort()
                claimed.update(
                    bytes(r[0])
                    for r in await conn.fetch(
                        "INSERT INTO files (path, root, rel, size, mtime_ns, inode, kind,"
                        " updated_at, state, owner) SELECT p, r, l, s, m, i, k, $8, 'seen', $9"
                        " FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[],"
                        " $5::bigint[], $6::bigint[], $7::text[]) AS t(p, r, l, s, m, i, k)"
                        " ORDER BY p ON CONFLICT (path) DO NOTHING RETURNING path",
                        *_columns(inserts, 7),
                        now,
                        self.worker_id,
                    )
                )
            if resets:
                resets.sort()
                claimed.update(
                    bytes(r[0])
                    for r in await conn.fetch(
                        "UPDATE files SET root = t.r, rel = t.l, size = t.s, mtime_ns = t.m,"  # noqa: S608
                        " inode = t.i, kind = t.k, updated_at = $8, state = 'seen',"
                        " batch_id = NULL, shard_id = NULL, member_name = NULL, attempts = 0,"
                        " last_error = NULL, owner = $9 FROM unnest($1::bytea[], $2::bytea[],"
                        " $3::bytea[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])"
                        " AS t(p, r, l, s, m, i, k) WHERE files.path = t.p"
                        f" AND {claimable('files.owner', '$9')} RETURNING files.path",
                        *_columns(resets, 7),
                        now,
                        self.worker_id,
                    )
                )
            if refreshes:
                refreshes.sort()
                claimed.update(
                    bytes(r[0])
                    for r in await conn.fetch(
                        "UPDATE files SET root = t.r, rel = t.l, inode = t.i, kind = t.k,"  # noqa: S608
                        " updated_at = $6, owner = $7 FROM unnest($1::bytea[], $2::bytea[],"
                        " $3::bytea[], $4::bigint[], $5::text[]) AS t(p, r, l, i, k)"
                        " WHERE files.path = t.p AND files.state IN ('seen', 'settled', 'failed')"
                        f" AND {claimable('files.owner', '$7')} RETURNING files.path",
                        *_columns(refreshes, 5),
                        now,
                        self.worker_id,
                    )
                )
        return [f for key, f in wanted if key in claimed]

    async def record_skipped(self, items: Sequence[Skipped]) -> list[Skipped]:
        now = self._clock()
        changed: list[Skipped] = []
        async with self._tx() as conn:
            for s in items:
                written = await conn.fetchval(
                    "INSERT INTO files (path, size, mtime_ns, kind, last_error, updated_at, state)"
                    " VALUES ($1, $2, $3, $4, $5, $6, 'skipped') ON CONFLICT (path) DO UPDATE SET"
                    " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " kind = COALESCE(excluded.kind, files.kind),"
                    " last_error = excluded.last_error, updated_at = excluded.updated_at,"
                    " state = 'skipped', shard_id = NULL"
                    " WHERE files.state != 'skipped' OR files.size != excluded.size"
                    " OR files.mtime_ns != excluded.mtime_ns"
                    " OR files.last_error IS DISTINCT FROM excluded.last_error"
                    " RETURNING 1",
                    _key(s.path),
                    s.size if s.size is not None else -1,
                    s.mtime_ns if s.mtime_ns is not None else -1,
                    s.kind,
                    _text(f"{s.reason}: {s.detail}" if s.detail else s.reason),
                    now,
                )
                if written:
                    changed.append(s)
        return changed

    async def move_state(
        self,
        from_states: Iterable[FileState],
        to_state: FileState,
        *,
        batch_id: str | None = None,
        error: str | None = None,
    ) -> int:
        states = known_states(from_states, FILE_STATES, "file state")
        check(to_state, FILE_STATES, "file state")
        sql = (
            "UPDATE files SET state = $1, last_error = $2, updated_at = $3"
            " WHERE state = ANY($4::text[])"
        )
        args: list[Any] = [to_state, _text(error), self._clock(), states]
        if batch_id is not None:
            sql += " AND batch_id = $5"
            args.append(batch_id)
        async with self._tx() as conn:
            return _count(await conn.execute(sql, *args))

    async def mark(
        self,
        paths: Iterable[Path],
        state: FileState,
        *,
        batch_id: str | None = None,
        shard_id: str | None = None,
        error: str | None = None,
        only_shard: str | None = None,
    ) -> int:
        check(state, FILE_STATES, "file state")
        keys = list(dict.fromkeys(_key(p) for p in paths))
        sql = (
            "UPDATE files SET state = $1, batch_id = COALESCE($2, batch_id),"
            " shard_id = COALESCE($3, shard_id), last_error = $4, attempts = attempts + $5,"
            " updated_at = $6 FROM unnest($7::bytea[]) AS t(p) WHERE files.path = t.p"
        )
        args: list[Any] = [state, batch_id, shard_id, _text(error)]
        args += [1 if state == "uploading" else 0, self._clock(), keys]
        if only_shard is not None:
            sql += " AND shard_id = $8"
            args.append(only_shard)
        async with self._tx() as conn:
            return _count(await conn.execute(sql, *args))

    async def get_file(self, path: Path) -> FileRow | None:
        rows = await self._fetch(
            f"SELECT {FILE_COLUMNS} FROM files WHERE path = $1",  # noqa: S608 fixed columns
            _key(path),
        )
        return file_row(rows[0]) if rows else None

    async def files_in_state(
        self, states: Iterable[FileState], batch_id: str | None = None
    ) -> AsyncIterator[FileRow]:
        for state in dict.fromkeys(states):
            check(state, FILE_STATES, "file state")
            after = b""
            while True:
                if batch_id is None:
                    page = await self._fetch(
                        f"SELECT {FILE_COLUMNS} FROM files WHERE state = $1"  # noqa: S608
                        " AND path > $2 ORDER BY path LIMIT $3",
                        state,
                        after,
                        _PAGE,
                    )
                else:
                    page = await self._fetch(
                        f"SELECT {FILE_COLUMNS} FROM files WHERE batch_id = $1"  # noqa: S608
                        " AND state = $2 AND path > $3 ORDER BY path LIMIT $4",
                        batch_id,
                        state,
                        after,
                        _PAGE,
                    )
                for row in page:
                    yield file_row(row)
                if len(page) < _PAGE:
                    break
                after = bytes(page[-1][0])

    async def counts(self, batch_id: str | None = None) -> dict[FileState, int]:
        if batch_id is None:
            rows = await self._fetch("SELECT state, count(*) FROM files GROUP BY state")
        else:
            rows = await self._fetch(
                "SELECT state, count(*) FROM files WHERE batch_id = $1 GROUP BY state", batch_id
            )
        found = {r[0]: int(r[1]) for r in rows}
        return {s: found.get(s, 0) for s in FILE_STATES}

    # -- member names -------------------------------------------------------------------

    async def assign_members(self, batch_id: str, files: Sequence[FoundFile]) -> dict[Path, str]:
        result: dict[Path, str] = {}
        new_rows: list[tuple[str, bytes]] = []
        async with self._tx() as conn:
            # One worker at a time names a batch's files: two choosing at once could both
            # take the same free name.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", batch_id)
            names_taken: dict[str, bool] = {}

            def taken(name: str) -> bool:
                if name not in names_taken:
                    raise _Unknown(name)
                return names_taken[name]

            for start in range(0, len(files), _CHUNK):
                chunk = files[start : start + _CHUNK]
                keys = [_key(f.location) for f in chunk]
                existing = {
                    bytes(r[0]): r[1]
                    for r in await conn.fetch(
                        "SELECT m.path, m.member_name FROM unnest($2::bytea[]) AS t(p)"
                        " JOIN members m ON m.batch_id = $1 AND m.path = t.p",
                        batch_id,
                        keys,
                    )
                }
                for key, f in zip(keys, chunk, strict=True):
                    if f.path in result:
                        continue
                    name = existing.get(key)
                    while name is None:
                        try:
                            name = member_name(f.rel, taken)
                        except _Unknown as unknown:
                            names_taken[unknown.name] = bool(
                                await conn.fetchval(
                                    "SELECT 1 FROM members WHERE batch_id = $1"
                                    " AND member_name = $2",
                                    batch_id,
                                    unknown.name,
                                )
                            )
                            continue
                        names_taken[name] = True
                        new_rows.append((name, key))
                    result[f.path] = name
            if new_rows:
                await conn.execute(
                    "INSERT INTO members (batch_id, member_name, path)"
                    " SELECT $1, n, p FROM unnest($2::text[], $3::bytea[]) AS t(n, p)",
                    batch_id,
                    *_columns(new_rows, 2),
                )
            pairs = [(name, _key(path)) for path, name in result.items()]
            if pairs:
                await conn.execute(
                    "UPDATE files SET member_name = t.n, batch_id = $1"
                    " FROM unnest($2::text[], $3::bytea[]) AS t(n, p) WHERE files.path = t.p",
                    batch_id,
                    *_columns(pairs, 2),
                )
        return result
