"""Files and their tar member names: what was seen, and how far each file got.

A file's row is keyed by its absolute path and holds the size, mtime and inode it had, and a
state (see :mod:`rfbatch.state`). The ``members`` table gives each file of a batch a tar member
name that is unique in the batch and never changes once given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from rfbatch.media import FoundFile, Skipped
from rfbatch.member_names import member_name
from rfbatch.state.database import (
    Database,
    Key,
    _check,
    _chunks,
    _key,
    _marks,
    _text,
    _where,
)
from rfbatch.state.records import DONE_STATES, FILE_STATES, IN_FLIGHT_STATES, FileRow, FileState
from rfbatch.state.rows import FILE_COLUMNS, file_row

_PAGE = 1000  # rows per files_in_state page


def _file_values(f: FoundFile, now: float, key: Key) -> tuple[Any, ...]:
    """A ``files`` row's columns root .. path, in the order of the INSERT and UPDATE below."""
    return (_key(f.root), _key(f.rel), f.size, f.mtime_ns, f.inode, f.kind, now, key)


_SETTLED_STATES = ", ".join(f"'{s}'" for s in sorted(DONE_STATES | IN_FLIGHT_STATES))
_SENT_STATES = ", ".join(f"'{s}'" for s in sorted(DONE_STATES - {"skipped"}))


@lru_cache(maxsize=8)
def _attention_sql(n: int) -> str:
    """Of ``n`` files given as (index, path, size, mtime_ns, batch wanted or NULL), those
    :meth:`FileStore.filter_new` must act on: unknown, changed, not done nor on their way, or
    sent to another batch than the one wanted. The others (a rescan's common case) are
    compared in SQLite and never come back to Python."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * n)
    return (
        f"WITH given (i, path, size, mtime_ns, batch) AS (VALUES {values})"  # noqa: S608
        " SELECT given.i, files.path, files.size, files.mtime_ns, files.state, files.batch_id"
        " FROM given LEFT JOIN files ON files.path = given.path"
        " WHERE files.path IS NULL OR files.size != given.size"
        " OR files.mtime_ns != given.mtime_ns"
        f" OR files.state NOT IN ({_SETTLED_STATES})"
        f" OR (given.batch IS NOT NULL AND files.state IN ({_SENT_STATES})"
        " AND files.batch_id IS NOT given.batch)"
    )


class FileStore(Database):
    """The ``files`` and ``members`` tables."""

    async def filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None = None
    ) -> list[FoundFile]:
        """The files that must be sent; records every one.

        Returned: files not known yet (recorded as ``seen``), files whose size or mtime changed
        (reset to ``seen``, their shard and error cleared), and unchanged files that never got
        through (``seen``, ``settled``, ``failed``). Not returned: unchanged files that are
        done (``uploaded``, ``ingested``, ``skipped``) or in a shard right now (``packed``,
        ``uploading``). A path given twice is returned once.

        ``batch_of`` names the batch each file is meant for (a one-shot upload to a given
        batch): an unchanged file sent to a *different* batch is then returned and reset, since
        the batch asked for does not hold it.
        """
        return await self._run(lambda: self._filter_new(files, batch_of))

    def _filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None
    ) -> list[FoundFile]:
        now = self._clock()
        out: list[FoundFile] = []
        inserts: list[tuple[Any, ...]] = []
        resets: list[tuple[Any, ...]] = []
        refreshes: list[tuple[Any, ...]] = []
        handled: set[Key] = set()
        with self._tx() as conn:
            for chunk in _chunks(files):
                keys = [_key(f.location) for f in chunk]
                wanted = [batch_of(f) for f in chunk] if batch_of is not None else None
                # SQLite compares every file with its row and answers only for the files that
                # need something: a rescan's unchanged, done files cost Python nothing here.
                params: list[Any] = []
                for i, f in enumerate(chunk):
                    params += (i, keys[i], f.size, f.mtime_ns, wanted[i] if wanted else None)
                attention = {r[0]: r[1:] for r in conn.execute(_attention_sql(len(chunk)), params)}
                for i in sorted(attention):
                    key, f = keys[i], chunk[i]
                    if key in handled:
                        continue
                    handled.add(key)
                    known, size, mtime_ns, state, batch_id = attention[i]
                    if known is None:
                        inserts.append(_file_values(f, now, key))
                        out.append(f)
                    elif (size, mtime_ns) != (f.size, f.mtime_ns) or (
                        wanted is not None
                        and state in DONE_STATES
                        and state != "skipped"
                        and batch_id != wanted[i]
                    ):
                        resets.append(_file_values(f, now, key))
                        out.append(f)
                    elif state not in DONE_STATES and state not in IN_FLIGHT_STATES:
                        refreshes.append((_key(f.root), _key(f.rel), f.inode, f.kind, now, key))
                        out.append(f)
            conn.executemany(
                "INSERT INTO files (root, rel, size, mtime_ns, inode, kind, updated_at, path,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'seen')",
                inserts,
            )
            conn.executemany(
                "UPDATE files SET root = ?, rel = ?, size = ?, mtime_ns = ?, inode = ?, kind = ?,"
                " updated_at = ?, state = 'seen', batch_id = NULL, shard_id = NULL,"
                " member_name = NULL, attempts = 0, last_error = NULL WHERE path = ?",
                resets,
            )
            conn.executemany(
                "UPDATE files SET root = ?, rel = ?, inode = ?, kind = ?, updated_at = ?"
                " WHERE path = ?",
                refreshes,
            )
        return out

    async def record_skipped(self, items: Sequence[Skipped]) -> list[Skipped]:
        """Record files that cannot be sent (state ``skipped``, the reason in ``last_error``).

        Returns the items that were not recorded so already (same size, mtime and reason): a
        rescan that meets the same bad file again changes nothing, and says so.
        """
        now = self._clock()

        def write() -> list[Skipped]:
            changed: list[Skipped] = []
            with self._tx() as conn:
                for s in items:
                    row = (
                        _key(s.path),
                        s.size if s.size is not None else -1,
                        s.mtime_ns if s.mtime_ns is not None else -1,
                        s.kind,
                        _text(f"{s.reason}: {s.detail}" if s.detail else s.reason),
                        now,
                    )
                    cursor = conn.execute(
                        "INSERT INTO files"
                        " (path, size, mtime_ns, kind, last_error, updated_at, state)"
                        " VALUES (?, ?, ?, ?, ?, ?, 'skipped') ON CONFLICT (path) DO UPDATE SET"
                        " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                        " kind = COALESCE(excluded.kind, kind), last_error = excluded.last_error,"
                        " updated_at = excluded.updated_at, state = 'skipped', shard_id = NULL"
                        " WHERE state != 'skipped' OR size != excluded.size"
                        " OR mtime_ns != excluded.mtime_ns"
                        " OR last_error IS NOT excluded.last_error",
                        row,
                    )
                    if cursor.rowcount:
                        changed.append(s)
            return changed

        return await self._run(write)

    async def move_state(
        self,
        from_states: Iterable[FileState],
        to_state: FileState,
        *,
        batch_id: str | None = None,
        error: str | None = None,
    ) -> int:
        """Move every file in ``from_states`` (of one batch, or all) to ``to_state`` at once.

        One statement in SQLite, so a batch of millions costs no Python memory; returns how
        many rows moved. ``last_error`` becomes ``error``.
        """
        states = list(dict.fromkeys(from_states))
        for state in [*states, to_state]:
            _check(state, FILE_STATES, "file state")
        now = self._clock()
        sql = (
            "UPDATE files SET state = ?, last_error = ?, updated_at = ?"  # noqa: S608
            f" WHERE state IN ({_marks(len(states))})"
        )
        params: list[Any] = [to_state, _text(error), now, *states]
        if batch_id is not None:
            sql += " AND batch_id = ?"
            params.append(batch_id)

        def write() -> int:
            with self._tx() as conn:
                return conn.execute(sql, params).rowcount

        return await self._run(write)

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
        """Move known files to ``state`` in one transaction; return how many rows changed.

        ``batch_id``/``shard_id`` are set when given (kept otherwise); ``last_error`` becomes
        ``error`` (cleared when ``None``); ``attempts`` grows by one on ``uploading``. With
        ``only_shard`` a row changes only if it still belongs to that shard, so a file reset
        by a newer version is not marked with the fate of the old one. Unknown paths are
        ignored.
        """
        _check(state, FILE_STATES, "file state")
        bump = 1 if state == "uploading" else 0
        now = self._clock()
        sql = (
            "UPDATE files SET state = ?, batch_id = COALESCE(?, batch_id),"
            " shard_id = COALESCE(?, shard_id), last_error = ?, attempts = attempts + ?,"
            " updated_at = ? WHERE path = ?"
        )
        if only_shard is not None:
            sql += " AND shard_id = ?"
        tail = (only_shard,) if only_shard is not None else ()
        targets = list(paths)

        def write() -> int:
            rows = [
                (state, batch_id, shard_id, _text(error), bump, now, _key(p), *tail)
                for p in targets
            ]
            with self._tx() as conn:
                return conn.executemany(sql, rows).rowcount

        return await self._run(write)

    async def get_file(self, path: Path) -> FileRow | None:
        def read() -> FileRow | None:
            row = self._conn.execute(
                f"SELECT {FILE_COLUMNS} FROM files WHERE path = ?",  # noqa: S608 fixed columns
                (_key(path),),
            ).fetchone()
            return file_row(row) if row is not None else None

        return await self._run(read)

    async def files_in_state(
        self, states: Iterable[FileState], batch_id: str | None = None
    ) -> AsyncIterator[FileRow]:
        """Every file in one of ``states`` (optionally of one batch), a page at a time.

        Ordered by state as given, then path. Rows may change while this runs; a row that
        leaves its state before its page is read is not yielded.
        """
        for state in dict.fromkeys(states):
            _check(state, FILE_STATES, "file state")
            # TEXT sorts before BLOB, so paging by key walks both kinds of path in one order.
            after: Key = ""
            while True:
                page = await self._run(partial(self._files_page, state, batch_id, after))
                for row in page:
                    yield row
                if len(page) < _PAGE:
                    break
                after = _key(page[-1].path)

    def _files_page(self, state: str, batch_id: str | None, after: Key) -> list[FileRow]:
        # With or without a batch, one index serves the whole query: files_by_batch
        # (batch_id, state, path) or files_by_state (state, path).
        scope, args = ("batch_id = ? AND ", [batch_id]) if batch_id is not None else ("", [])
        cursor = self._conn.execute(
            f"SELECT {FILE_COLUMNS} FROM files WHERE {scope}state = ? AND path > ?"  # noqa: S608
            " ORDER BY path LIMIT ?",
            (*args, state, after, _PAGE),
        )
        return [file_row(r) for r in cursor]

    async def counts(self, batch_id: str | None = None) -> dict[FileState, int]:
        """Files per state (every state present, zeros included), overall or for one batch."""
        where, args = _where(batch_id=batch_id)
        sql = f"SELECT state, count(*) FROM files{where} GROUP BY state"  # noqa: S608

        def read() -> dict[FileState, int]:
            found = dict(self._conn.execute(sql, args).fetchall())
            return {s: int(found.get(s, 0)) for s in FILE_STATES}

        return await self._run(read)

    # -- member names -------------------------------------------------------------------

    async def assign_members(self, batch_id: str, files: Sequence[FoundFile]) -> dict[Path, str]:
        """The tar member name of each file in ``batch_id``, assigning new ones as needed.

        Stable: a file keeps the name it was given in this batch, across calls and restarts.
        New names come from :func:`rfbatch.member_names.member_name` and are unique within
        the batch. Known files' rows get the name and batch too.
        """
        return await self._run(lambda: self._assign_members(batch_id, files))

    def _assign_members(self, batch_id: str, files: Sequence[FoundFile]) -> dict[Path, str]:
        result: dict[Path, str] = {}
        new_rows: list[tuple[str, str, Key]] = []
        with self._tx() as conn:
            # Names given in this call, then the batch's names already stored: one primary-key
            # lookup per candidate, never the batch's whole name list (which grows to millions).
            fresh: set[str] = set()

            def taken(name: str) -> bool:
                if name in fresh:
                    return True
                row = conn.execute(
                    "SELECT 1 FROM members WHERE batch_id = ? AND member_name = ?",
                    (batch_id, name),
                ).fetchone()
                return row is not None

            for chunk in _chunks(files):
                keys = [_key(f.location) for f in chunk]
                existing = dict(
                    conn.execute(
                        "SELECT path, member_name FROM members WHERE batch_id = ?"  # noqa: S608
                        f" AND path IN ({_marks(len(keys))})",
                        (batch_id, *keys),
                    ).fetchall()
                )
                for key, f in zip(keys, chunk, strict=True):
                    if f.path in result:
                        continue
                    name = existing.get(key)
                    if name is None:
                        name = member_name(f.rel, taken)
                        fresh.add(name)
                        new_rows.append((batch_id, name, key))
                    result[f.path] = name
            conn.executemany(
                "INSERT INTO members (batch_id, member_name, path) VALUES (?, ?, ?)", new_rows
            )
            conn.executemany(
                "UPDATE files SET member_name = ?, batch_id = ? WHERE path = ?",
                [(name, batch_id, _key(path)) for path, name in result.items()],
            )
        return result
