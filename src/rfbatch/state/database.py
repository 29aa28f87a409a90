"""The SQLite core of the manifest: connection, directory lock, one worker thread, transactions.

:class:`Database` owns the connection and the lock; the per-table classes (files, batches,
downloads, events) subclass it and :class:`~rfbatch.state.manifest.SqliteManifest` joins them.
Every call goes through :meth:`Database._run`, which hands it to the single thread behind a
``CapacityLimiter(1)``: SQLite never blocks the event loop and never sees two threads at once.
The module's small helpers turn Python values into bound SQL values and back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import anyio
import anyio.to_thread
import structlog

from rfbatch.errors import ConfigError, ManifestClosedError
from rfbatch.state.rows import check, known_states, unkey
from rfbatch.state.schema import migrate

log = structlog.get_logger("rfbatch.state")

DB_NAME = "manifest.sqlite3"
LOCK_NAME = "manifest.lock"
_INCREMENTAL = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental
_CHUNK = 500  # rows per IN (...) query: far below SQLite's bound-variable limit

T = TypeVar("T")


_check = check


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _where(
    *,
    batch_id: str | None = None,
    states: Iterable[str] | None = None,
    allowed: tuple[str, ...] = (),
    kind: str | None = None,
) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause (or ``""``) and its arguments for the list queries' filters."""
    clauses: list[str] = []
    args: list[Any] = []
    if batch_id is not None:
        clauses.append("batch_id = ?")
        args.append(batch_id)
    if kind is not None:
        clauses.append("kind = ?")
        args.append(kind)
    if states is not None:
        wanted = known_states(states, allowed)
        clauses.append(f"state IN ({_marks(len(wanted))})")
        args.extend(wanted)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


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


# Read back the same way by both ledgers (rfbatch.state.rows).
_unkey = unkey


def _text(value: str | None) -> str | None:
    """Free text (errors, reasons) made storable: unencodable characters become escapes."""
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _inside(path: Path, folder: Path) -> bool:
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    return real == real_folder or real.startswith(real_folder.rstrip(os.sep) + os.sep)


class Database:
    """An open manifest database. Open it with :meth:`open` (or ``async with``)."""

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
        return f"{type(self).__name__}({str(self.db_path)!r})"

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        *,
        source_roots: Sequence[Path] = (),
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> Self:
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
            lambda: _connect(state_dir, exclusive)
        )
        return cls(conn, db_path, lock_fd, clock)

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

    async def check_writable(self) -> None:
        """Raise unless a write transaction can be opened now (the daemon's readiness check)."""

        def probe() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")

        await self._run(probe)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise ManifestClosedError("the manifest is closed")
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


def _connect(state_dir: Path, exclusive: bool) -> tuple[sqlite3.Connection, Path, int | None]:
    """Open the database, or say in one line what is wrong with the state directory.

    Every fault here stops the start before any work (ConfigError, exit 2): a directory that is
    a file, read-only, immutable or on a full disk, and a database that is not one.
    """
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(
            f"state directory {state_dir} is a file, not a directory "
            "(choose another with [state] dir or RFBATCH_STATE__DIR)"
        )
    try:
        return _connect_unchecked(state_dir, exclusive)
    except OSError as exc:
        raise ConfigError(
            f"state directory {state_dir} cannot be used: {exc.strerror or exc} "
            "(choose another with [state] dir or RFBATCH_STATE__DIR)"
        ) from None
    except sqlite3.DatabaseError as exc:
        db_path = state_dir / DB_NAME
        if isinstance(exc, sqlite3.OperationalError) and not _corrupt(exc):
            raise ConfigError(f"manifest {db_path} cannot be opened: {exc}") from None
        raise ConfigError(
            f"manifest {db_path} is damaged ({exc}): move it aside "
            f"(mv {db_path} {db_path}.damaged) to start afresh; unchanged files already sent "
            "will then be sent again"
        ) from None


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _incremental_vacuum_mode(conn: sqlite3.Connection, db_path: Path) -> None:
    """Put the database in ``auto_vacuum = INCREMENTAL`` mode, so pruned pages can be freed.

    A new database takes the mode before its first table. An existing one in another mode
    switches only through a full ``VACUUM``, done once here (and said in a log line): it
    rewrites the file, which takes a while for a large manifest, and never again after.
    """
    mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    if mode == _INCREMENTAL:
        return
    conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if tables:
        before = db_path.stat().st_size
        log.info("manifest.vacuum", path=str(db_path), reason="switch to incremental auto_vacuum")
        conn.execute("VACUUM")
        log.info(
            "manifest.vacuumed",
            path=str(db_path),
            bytes_before=before,
            bytes_after=db_path.stat().st_size,
        )


def _connect_unchecked(
    state_dir: Path, exclusive: bool
) -> tuple[sqlite3.Connection, Path, int | None]:
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
            _incremental_vacuum_mode(conn, db_path)
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
