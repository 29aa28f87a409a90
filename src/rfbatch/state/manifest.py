"""The manifest: what was seen, packed, sent and fetched, so a restart resumes instead of repeating.

Every source file has a row keyed by its absolute path with the size, mtime and inode it had,
and a state::

    seen → settled → packed → uploading → uploaded → ingested
                                  ↘ failed        (skipped: never sendable, with the reason)

A changed file (size or mtime) goes back to ``seen`` and is sent again; an unchanged file that
was uploaded, ingested or skipped never is. Shards, batches, downloads and webhook event ids
have rows too. A state change is committed before the action it promises is taken as done.

:class:`SqliteManifest` keeps it in SQLite (WAL, ``synchronous=NORMAL``: a process crash loses
nothing committed) inside a state directory that must not be a source folder. Every call runs
in one dedicated worker thread (a ``CapacityLimiter(1)``), so SQLite never blocks the event loop
and never sees two threads at once; writes go many rows per transaction. An exclusive lock on the
directory keeps a second rfbatch from working from the same manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from rfbatch.errors import ConfigError
from rfbatch.ids import validate_batch_id
from rfbatch.media import FoundFile, Skipped
from rfbatch.member_names import member_name
from rfbatch.state.records import (
    BATCH_KINDS,
    BATCH_STATES,
    DONE_STATES,
    DOWNLOAD_STATES,
    FILE_STATES,
    IN_FLIGHT_STATES,
    SHARD_STATES,
    BatchKind,
    BatchRow,
    BatchState,
    DownloadMark,
    DownloadRow,
    DownloadState,
    FileRow,
    FileState,
    ShardRow,
    ShardState,
)
from rfbatch.state.schema import migrate

__all__ = ["Manifest", "SqliteManifest"]

DB_NAME = "manifest.sqlite3"
LOCK_NAME = "manifest.lock"
_CHUNK = 500  # rows per IN (...) query: far below SQLite's bound-variable limit
_PAGE = 1000

T = TypeVar("T")


class Manifest(Protocol):
    """What the pipeline needs from durable state; :class:`SqliteManifest` implements it."""

    async def filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None = None
    ) -> list[FoundFile]: ...
    async def record_skipped(self, items: Sequence[Skipped]) -> None: ...
    async def mark(
        self,
        paths: Iterable[Path],
        state: FileState,
        *,
        batch_id: str | None = None,
        shard_id: str | None = None,
        error: str | None = None,
        only_shard: str | None = None,
    ) -> int: ...
    async def move_state(
        self,
        from_states: Iterable[FileState],
        to_state: FileState,
        *,
        batch_id: str | None = None,
        error: str | None = None,
    ) -> int: ...
    async def get_file(self, path: Path) -> FileRow | None: ...
    def files_in_state(
        self, states: Iterable[FileState], batch_id: str | None = None
    ) -> AsyncIterator[FileRow]: ...
    async def counts(self, batch_id: str | None = None) -> dict[FileState, int]: ...
    async def assign_members(
        self, batch_id: str, files: Sequence[FoundFile]
    ) -> dict[Path, str]: ...
    async def member_path(self, batch_id: str, member: str) -> Path | None: ...
    async def create_shard(
        self, batch_id: str, paths: Sequence[Path], *, size: int
    ) -> ShardRow: ...
    async def update_shard(
        self,
        shard_id: str,
        *,
        state: ShardState | None = None,
        error: str | None = None,
        bump_attempts: bool = False,
    ) -> ShardRow: ...
    async def get_shard(self, shard_id: str) -> ShardRow | None: ...
    async def list_shards(
        self, *, batch_id: str | None = None, states: Iterable[ShardState] | None = None
    ) -> list[ShardRow]: ...
    async def shard_files(self, shard_id: str) -> list[FileRow]: ...
    async def create_batch(
        self, batch_id: str, kind: BatchKind, *, info: Mapping[str, Any] | None = None
    ) -> BatchRow: ...
    async def get_batch(self, batch_id: str) -> BatchRow | None: ...
    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        expected_count: int | None = None,
        job_id: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> BatchRow: ...
    async def list_batches(
        self, *, states: Iterable[BatchState] | None = None, kind: BatchKind | None = None
    ) -> list[BatchRow]: ...
    async def add_downloads(
        self, batch_id: str, items: Sequence[tuple[str | None, str, int | None]]
    ) -> int: ...
    async def mark_download(
        self,
        batch_id: str,
        part_name: str | None,
        file_name: str,
        state: DownloadState,
        *,
        path: Path | None = None,
        size: int | None = None,
    ) -> None: ...
    async def mark_downloads(
        self, batch_id: str, state: DownloadState, marks: Sequence[DownloadMark]
    ) -> None: ...
    async def list_downloads(
        self, batch_id: str, *, states: Iterable[DownloadState] | None = None
    ) -> list[DownloadRow]: ...
    async def check_writable(self) -> None: ...
    async def record_event(self, event_id: str) -> bool: ...
    async def prune_events(self, older_than: float) -> int: ...
    async def close(self) -> None: ...


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# Paths and names that are not valid UTF-8 (a file name with stray bytes reaches Python as lone
# surrogates; a hostile server can send them in JSON) cannot be bound as SQLite TEXT. They are
# stored as the BLOB of their surrogatepass encoding instead: lossless, and never equal to any
# TEXT value, so keys stay distinct. Every value that is bound goes through _key and every value
# read back through _unkey, so callers only ever see str.
Key = str | bytes


def _key(value: str | os.PathLike[str]) -> Key:
    text = os.fspath(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _opt_key(value: str | os.PathLike[str] | None) -> Key | None:
    return None if value is None else _key(value)


def _unkey(value: Key) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _file_values(f: FoundFile, now: float, key: Key) -> tuple[Any, ...]:
    """A ``files`` row's columns root .. path, in the order of the INSERT and UPDATE below."""
    return (_key(f.root), _key(f.rel), f.size, f.mtime_ns, f.inode, f.kind, now, key)


def _path(value: Key | None) -> Path | None:
    return None if value is None else Path(_unkey(value))


def _text(value: str | None) -> str | None:
    """Free text (errors, reasons) made storable: unencodable characters become escapes."""
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _inside(path: Path, folder: Path) -> bool:
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    return real == real_folder or real.startswith(real_folder.rstrip(os.sep) + os.sep)


_FILE_COLUMNS = (
    "path, root, rel, size, mtime_ns, inode, kind, state, batch_id, shard_id, member_name, "
    "attempts, last_error, updated_at"
)
_SHARD_COLUMNS = (
    "shard_id, batch_id, state, file_count, bytes, attempts, last_error, created_at, updated_at"
)
_BATCH_COLUMNS = "batch_id, kind, state, expected_count, job_id, created_at, updated_at, info"
_DOWNLOAD_COLUMNS = "batch_id, part_name, file_name, size, state, path, updated_at"


def _file_row(r: Sequence[Any]) -> FileRow:
    return FileRow(
        path=Path(_unkey(r[0])),
        root=_path(r[1]),
        rel=_unkey(r[2]) if r[2] is not None else None,
        size=r[3],
        mtime_ns=r[4],
        inode=r[5],
        kind=r[6],
        state=r[7],
        batch_id=r[8],
        shard_id=r[9],
        member_name=r[10],
        attempts=r[11],
        last_error=r[12],
        updated_at=r[13],
    )


def _shard_row(r: Sequence[Any]) -> ShardRow:
    return ShardRow(*r)


def _batch_row(r: Sequence[Any]) -> BatchRow:
    return BatchRow(
        batch_id=r[0],
        kind=r[1],
        state=r[2],
        expected_count=r[3],
        job_id=r[4],
        created_at=r[5],
        updated_at=r[6],
        info=json.loads(r[7]),
    )


def _download_row(r: Sequence[Any]) -> DownloadRow:
    return DownloadRow(
        batch_id=r[0],
        part_name=_unkey(r[1]),
        file_name=_unkey(r[2]),
        size=r[3],
        state=r[4],
        path=_path(r[5]),
        updated_at=r[6],
    )


class SqliteManifest:
    """The SQLite :class:`Manifest`. Open it with :meth:`open` (or ``async with``)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        db_path: Path,
        lock_fd: int | None,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._lock_fd = lock_fd
        self._clock = clock
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        self.db_path = db_path

    def __repr__(self) -> str:
        return f"SqliteManifest({str(self.db_path)!r})"

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        *,
        source_roots: Sequence[Path] = (),
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> SqliteManifest:
        """Open (creating if needed) the manifest in ``state_dir``.

        Raises :class:`~rfbatch.errors.ConfigError` when ``state_dir`` lies inside one of
        ``source_roots`` (the manifest must never be written into a source folder), when
        another process holds the directory (``exclusive``), or when the database was written
        by a newer rfbatch.
        """
        for root in source_roots:
            if _inside(state_dir, root):
                raise ConfigError(
                    f"state directory {state_dir} is inside source folder {root}: "
                    "choose a state directory outside every source"
                )
        # Connected in a plain worker thread; from then on, only the limiter's thread uses it.
        conn, db_path, lock_fd = await anyio.to_thread.run_sync(
            lambda: cls._connect(state_dir, exclusive)
        )
        return cls(conn, db_path, lock_fd, clock)

    @staticmethod
    def _connect(state_dir: Path, exclusive: bool) -> tuple[sqlite3.Connection, Path, int | None]:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_fd: int | None = None
        if exclusive:
            lock_fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(lock_fd)
                raise ConfigError(
                    f"state directory {state_dir} is in use by another rfbatch process"
                ) from exc
        db_path = state_dir / DB_NAME
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA busy_timeout = 10000")
                migrate(conn, where=str(db_path))
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return conn, db_path, lock_fd

    async def close(self) -> None:
        """Close the database and release the directory lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)

    def _close_sync(self) -> None:
        try:
            self._conn.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def __aenter__(self) -> SqliteManifest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the manifest is closed")
        # Not abandoned on cancellation: a transaction always finishes, committed or rolled back.
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- files --------------------------------------------------------------------------

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
                marks = _marks(len(keys))
                sql = (
                    "SELECT path, size, mtime_ns, state, batch_id FROM files"  # noqa: S608
                    f" WHERE path IN ({marks})"
                )
                known = {r[0]: r[1:] for r in conn.execute(sql, keys)}
                for key, f in zip(keys, chunk, strict=True):
                    if key in handled:
                        continue
                    handled.add(key)
                    row = known.get(key)
                    if row is None:
                        inserts.append(_file_values(f, now, key))
                        out.append(f)
                        continue
                    size, mtime_ns, state, batch_id = row
                    if (size, mtime_ns) != (f.size, f.mtime_ns) or (
                        batch_of is not None
                        and state in DONE_STATES
                        and state != "skipped"
                        and batch_id != batch_of(f)
                    ):
                        resets.append(_file_values(f, now, key))
                        out.append(f)
                    elif state in DONE_STATES or state in IN_FLIGHT_STATES:
                        continue  # a rescan's common case: nothing to write, nothing built
                    else:
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

    async def record_skipped(self, items: Sequence[Skipped]) -> None:
        """Record files that cannot be sent (state ``skipped``, the reason in ``last_error``)."""
        now = self._clock()

        def write() -> None:
            rows = [
                (
                    _key(s.path),
                    s.size if s.size is not None else -1,
                    s.mtime_ns if s.mtime_ns is not None else -1,
                    s.kind,
                    _text(f"{s.reason}: {s.detail}" if s.detail else s.reason),
                    now,
                )
                for s in items
            ]
            with self._tx() as conn:
                conn.executemany(
                    "INSERT INTO files (path, size, mtime_ns, kind, last_error, updated_at, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'skipped') ON CONFLICT (path) DO UPDATE SET"
                    " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " kind = COALESCE(excluded.kind, kind), last_error = excluded.last_error,"
                    " updated_at = excluded.updated_at, state = 'skipped', shard_id = NULL",
                    rows,
                )

        await self._run(write)

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
        params: list[Any] = [to_state, error, now, *states]
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
                f"SELECT {_FILE_COLUMNS} FROM files WHERE path = ?",  # noqa: S608 fixed columns
                (_key(path),),
            ).fetchone()
            return _file_row(row) if row is not None else None

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
        if batch_id is None:
            cursor = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ? AND path > ?"  # noqa: S608
                " ORDER BY path LIMIT ?",
                (state, after, _PAGE),
            )
        else:
            cursor = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE batch_id = ? AND state = ?"  # noqa: S608
                " AND path > ? ORDER BY path LIMIT ?",
                (batch_id, state, after, _PAGE),
            )
        return [_file_row(r) for r in cursor]

    async def counts(self, batch_id: str | None = None) -> dict[FileState, int]:
        """Files per state (every state present, zeros included), overall or for one batch."""

        def read() -> dict[FileState, int]:
            if batch_id is None:
                cursor = self._conn.execute("SELECT state, count(*) FROM files GROUP BY state")
            else:
                cursor = self._conn.execute(
                    "SELECT state, count(*) FROM files WHERE batch_id = ? GROUP BY state",
                    (batch_id,),
                )
            found = dict(cursor.fetchall())
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

    async def member_path(self, batch_id: str, member: str) -> Path | None:
        """The source file behind tar member ``member`` of ``batch_id`` (for failure reports)."""

        def read() -> Path | None:
            row = self._conn.execute(
                "SELECT path FROM members WHERE batch_id = ? AND member_name = ?",
                (batch_id, member),
            ).fetchone()
            return _path(row[0]) if row is not None else None

        return await self._run(read)

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
                    f"INSERT INTO shards ({_SHARD_COLUMNS})"  # noqa: S608
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
        """Change a shard's state and error (``None`` clears it); raise ``KeyError`` if unknown."""
        if state is not None:
            _check(state, SHARD_STATES, "shard state")
        now = self._clock()

        def write() -> ShardRow:
            with self._tx() as conn:
                cursor = conn.execute(
                    "UPDATE shards SET state = COALESCE(?, state), last_error = ?,"
                    " attempts = attempts + ?, updated_at = ? WHERE shard_id = ?",
                    (state, _text(error), int(bump_attempts), now, shard_id),
                )
                if cursor.rowcount == 0:
                    raise KeyError(shard_id)
                row = conn.execute(
                    f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?",  # noqa: S608
                    (shard_id,),
                ).fetchone()
            return _shard_row(row)

        return await self._run(write)

    async def get_shard(self, shard_id: str) -> ShardRow | None:
        def read() -> ShardRow | None:
            row = self._conn.execute(
                f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?",  # noqa: S608
                (shard_id,),
            ).fetchone()
            return _shard_row(row) if row is not None else None

        return await self._run(read)

    async def list_shards(
        self, *, batch_id: str | None = None, states: Iterable[ShardState] | None = None
    ) -> list[ShardRow]:
        where, args = _where(batch_id=batch_id, states=states, allowed=SHARD_STATES)
        sql = f"SELECT {_SHARD_COLUMNS} FROM shards{where} ORDER BY created_at, shard_id"  # noqa: S608
        return await self._run(lambda: [_shard_row(r) for r in self._conn.execute(sql, args)])

    async def shard_files(self, shard_id: str) -> list[FileRow]:
        sql = f"SELECT {_FILE_COLUMNS} FROM files WHERE shard_id = ? ORDER BY path"  # noqa: S608
        return await self._run(lambda: [_file_row(r) for r in self._conn.execute(sql, (shard_id,))])

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
                conn.execute(
                    f"INSERT INTO batches ({_BATCH_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, 'open', 0, NULL, ?, ?, ?) ON CONFLICT (batch_id) DO NOTHING",
                    (batch_id, kind, now, now, info_json),
                )
                row = _batch_row(
                    conn.execute(
                        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608
                        (batch_id,),
                    ).fetchone()
                )
            if row.kind != kind:
                raise ConfigError(f"batch {batch_id!r} holds {row.kind}, not {kind}")
            return row

        return await self._run(write)

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        def read() -> BatchRow | None:
            row = self._conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608
                (batch_id,),
            ).fetchone()
            return _batch_row(row) if row is not None else None

        return await self._run(read)

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        expected_count: int | None = None,
        job_id: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> BatchRow:
        """Change the given fields (``info`` is merged in); raise ``KeyError`` if unknown."""
        if state is not None:
            _check(state, BATCH_STATES, "batch state")
        now = self._clock()

        def write() -> BatchRow:
            with self._tx() as conn:
                row = conn.execute(
                    "SELECT info FROM batches WHERE batch_id = ?", (batch_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(batch_id)
                merged = {**json.loads(row[0]), **(info or {})}
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
                return _batch_row(
                    conn.execute(
                        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608
                        (batch_id,),
                    ).fetchone()
                )

        return await self._run(write)

    async def list_batches(
        self, *, states: Iterable[BatchState] | None = None, kind: BatchKind | None = None
    ) -> list[BatchRow]:
        """Batches, oldest first, optionally only in ``states`` and of ``kind``."""
        where, args = _where(states=states, allowed=BATCH_STATES, kind=kind)
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches{where} ORDER BY created_at, batch_id"  # noqa: S608
        return await self._run(lambda: [_batch_row(r) for r in self._conn.execute(sql, args)])

    # -- downloads ----------------------------------------------------------------------

    async def add_downloads(
        self, batch_id: str, items: Sequence[tuple[str | None, str, int | None]]
    ) -> int:
        """Record ``(part_name, file_name, size)`` entries as ``pending``; known ones are kept.

        Returns how many were new. ``part_name`` ``None`` means the batch has no parts.
        """
        now = self._clock()
        rows = [(batch_id, _key(part or ""), _key(name), size, now) for part, name, size in items]

        def write() -> int:
            with self._tx() as conn:
                return conn.executemany(
                    "INSERT INTO downloads (batch_id, part_name, file_name, size, updated_at,"
                    " state) VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING",
                    rows,
                ).rowcount

        return await self._run(write)

    async def mark_download(
        self,
        batch_id: str,
        part_name: str | None,
        file_name: str,
        state: DownloadState,
        *,
        path: Path | None = None,
        size: int | None = None,
    ) -> None:
        """Set one download's state (and where it was written); the row is created if needed."""
        await self.mark_downloads(batch_id, state, [DownloadMark(part_name, file_name, path, size)])

    async def mark_downloads(
        self, batch_id: str, state: DownloadState, marks: Sequence[DownloadMark]
    ) -> None:
        """Set the state of many downloads in one transaction (rows are created if needed)."""
        _check(state, DOWNLOAD_STATES, "download state")
        now = self._clock()
        rows = [
            (
                batch_id,
                _key(m.part_name or ""),
                _key(m.file_name),
                m.size,
                state,
                _opt_key(m.path),
                now,
            )
            for m in marks
        ]

        def write() -> None:
            with self._tx() as conn:
                conn.executemany(
                    f"INSERT INTO downloads ({_DOWNLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                    " ON CONFLICT DO UPDATE SET size = COALESCE(excluded.size, size),"
                    " state = excluded.state, path = COALESCE(excluded.path, path),"
                    " updated_at = excluded.updated_at",
                    rows,
                )

        if rows:
            await self._run(write)

    async def list_downloads(
        self, batch_id: str, *, states: Iterable[DownloadState] | None = None
    ) -> list[DownloadRow]:
        where, args = _where(batch_id=batch_id, states=states, allowed=DOWNLOAD_STATES)
        sql = f"SELECT {_DOWNLOAD_COLUMNS} FROM downloads{where} ORDER BY part_name, file_name"  # noqa: S608
        return await self._run(lambda: [_download_row(r) for r in self._conn.execute(sql, args)])

    # -- webhook events -----------------------------------------------------------------

    async def check_writable(self) -> None:
        """Raise unless a write transaction can be opened now (the daemon's readiness check)."""

        def probe() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")

        await self._run(probe)

    async def record_event(self, event_id: str) -> bool:
        """``True`` the first time ``event_id`` is recorded, ``False`` for a redelivery."""
        now = self._clock()

        def write() -> bool:
            with self._tx() as conn:
                cursor = conn.execute(
                    "INSERT INTO webhook_events (event_id, received_at) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (_key(event_id), now),
                )
                return cursor.rowcount == 1

        return await self._run(write)

    async def prune_events(self, older_than: float) -> int:
        """Forget event ids received before ``older_than`` (a timestamp); return how many."""

        def write() -> int:
            with self._tx() as conn:
                return conn.execute(
                    "DELETE FROM webhook_events WHERE received_at < ?", (older_than,)
                ).rowcount

        return await self._run(write)


def _where(
    *,
    batch_id: str | None = None,
    states: Iterable[str] | None = None,
    allowed: tuple[str, ...] = (),
    kind: str | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if batch_id is not None:
        clauses.append("batch_id = ?")
        args.append(batch_id)
    if kind is not None:
        clauses.append("kind = ?")
        args.append(kind)
    if states is not None:
        wanted = list(dict.fromkeys(states))
        for s in wanted:
            _check(s, allowed, "state")
        clauses.append(f"state IN ({_marks(len(wanted))})")
        args.extend(wanted)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
