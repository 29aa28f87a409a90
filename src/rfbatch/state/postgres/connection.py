"""The PostgreSQL core of the shared ledger: the pool, transactions, schema and value helpers.

:class:`PgDatabase` owns an asyncpg pool; the per-concern classes subclass it and
:class:`~rfbatch.state.postgres.PostgresLedger` joins them, as the SQLite manifest does. Many
processes may hold one ledger: there is no directory lock, and the schema is migrated under a
transaction-scoped advisory lock, so workers starting together apply each migration once.

Paths, relative paths, part and file names and webhook event ids are stored as ``bytea`` of
their UTF-8 encoding with lone surrogates passed through (a file name with stray bytes reaches
Python as surrogates; a hostile server can send them in JSON): lossless, where PostgreSQL
``text`` can hold neither those nor NUL.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import asyncpg

from rfbatch.errors import ConfigError, ManifestClosedError
from rfbatch.redact import redact_url

# What the pool hands out; every statement of the ledger runs on one. (Generic in the stubs
# only: at run time the class takes no parameters.)
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Conn = object

# Seconds to connect, and for any one statement: nothing waits on the database for ever.
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
POOL_MAX = 4
# pg_advisory_xact_lock key for schema migrations ("rfbatch" in ASCII, as a number), and the
# session lock one worker holds while it uses the ledger.
_MIGRATION_LOCK = 0x7266626174636800
_WORKER_LOCK = 0x7266626174636801

_V1 = """
CREATE TABLE files (
    path        bytea PRIMARY KEY,
    root        bytea,
    rel         bytea,
    size        bigint NOT NULL,
    mtime_ns    bigint NOT NULL,
    inode       bigint NOT NULL DEFAULT 0,
    kind        text,
    state       text NOT NULL,
    batch_id    text,
    shard_id    text,
    member_name text,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    updated_at  double precision NOT NULL
);
CREATE INDEX files_by_state ON files (state, path);
CREATE INDEX files_by_batch ON files (batch_id, state, path);
CREATE INDEX files_by_shard ON files (shard_id);

CREATE TABLE members (
    batch_id    text NOT NULL,
    member_name text NOT NULL,
    path        bytea NOT NULL,
    PRIMARY KEY (batch_id, member_name),
    UNIQUE (batch_id, path)
);

CREATE TABLE shards (
    shard_id    text PRIMARY KEY,
    batch_id    text NOT NULL,
    state       text NOT NULL,
    file_count  integer NOT NULL,
    bytes       bigint NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);
CREATE INDEX shards_by_batch ON shards (batch_id, state);

CREATE TABLE batches (
    batch_id       text PRIMARY KEY,
    kind           text NOT NULL,
    state          text NOT NULL,
    expected_count bigint NOT NULL DEFAULT 0,
    job_id         text,
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL,
    info           text NOT NULL DEFAULT '{}'
);
CREATE INDEX batches_by_state ON batches (state, kind);

CREATE TABLE downloads (
    batch_id   text NOT NULL,
    part_name  bytea NOT NULL,
    file_name  bytea NOT NULL,
    size       bigint,
    state      text NOT NULL,
    path       bytea,
    updated_at double precision NOT NULL,
    PRIMARY KEY (batch_id, part_name, file_name)
);

CREATE TABLE webhook_events (
    event_id    bytea PRIMARY KEY,
    received_at double precision NOT NULL
);
CREATE INDEX webhook_events_by_age ON webhook_events (received_at);
"""

# Append only: entry i takes the schema from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


def _key(value: str | os.PathLike[str]) -> bytes:
    return os.fspath(value).encode("utf-8", "surrogatepass")


def _opt_key(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else _key(value)


def _text(value: str | None) -> str | None:
    """Free text made storable: unencodable characters and NUL become escapes."""
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _count(status: str) -> int:
    """The row count of a command status such as ``"UPDATE 3"`` or ``"INSERT 0 5"``."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


class PgDatabase:
    """An open PostgreSQL ledger. Open it with :meth:`open` (or ``async with``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        clock: Callable[[], float],
        lock: asyncpg.Connection | None = None,
    ) -> None:
        self._pool = pool
        self._lock = lock
        self._clock = clock
        self._closed = False
        self.url = redact_url(url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @classmethod
    async def open(
        cls, url: str, *, exclusive: bool = True, clock: Callable[[], float] = time.time
    ) -> Self:
        """Connect to the ledger at ``url`` and bring its schema up to date.

        ``exclusive``: hold the ledger's worker lock (a session advisory lock) until
        :meth:`close`, as SQLite holds its state directory: until workers claim their work from
        the ledger, a second worker on the same files would send them again.

        Raises :class:`~rfbatch.errors.ConfigError`, in one line naming the (redacted) URL, when
        the server cannot be reached or refuses, when another worker holds the ledger, and when
        the schema is newer than this rfbatch.
        """
        shown = redact_url(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot open the ledger at {shown}: {reason}") from None
        lock: asyncpg.Connection | None = None
        try:
            async with pool.acquire() as conn:
                await _migrate(conn, shown)
            if exclusive:
                lock = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
                if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", _WORKER_LOCK):
                    raise ConfigError(
                        f"the ledger at {shown} is in use by another rfbatch: one worker per "
                        "ledger (stop the other, or give this one its own database)"
                    )
        except BaseException:
            if lock is not None:
                await lock.close()
            await pool.close()
            raise
        return cls(pool, url, clock, lock)

    async def close(self) -> None:
        """Close every connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._pool.close()
        finally:
            if self._lock is not None:
                await self._lock.close()  # releases the worker lock

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def check_writable(self) -> None:
        """Raise unless a write could be committed now (the daemon's readiness check)."""
        async with self._tx() as conn:
            await conn.execute("SELECT 1 FROM rfbatch_schema FOR UPDATE")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        if self._closed:
            raise ManifestClosedError("the ledger is closed")
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        if self._closed:
            raise ManifestClosedError("the ledger is closed")
        async with self._pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows


async def _migrate(conn: Conn, shown: str) -> None:
    """Apply the migrations this database lacks, once, whoever else starts at the same time."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS rfbatch_schema (version integer NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM rfbatch_schema")
        version = int(found or 0)
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the ledger at {shown} has schema version {version}, newer than this rfbatch "
                f"understands ({SCHEMA_VERSION}): upgrade rfbatch"
            )
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step])
        if version < SCHEMA_VERSION:
            await conn.execute("DELETE FROM rfbatch_schema")
            await conn.execute("INSERT INTO rfbatch_schema (version) VALUES ($1)", SCHEMA_VERSION)
