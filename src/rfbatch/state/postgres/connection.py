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

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar

import asyncpg
import structlog

from rfbatch.errors import ConfigError, ManifestClosedError
from rfbatch.redact import redact_url

# What the pool hands out; every statement of the ledger runs on one. (Generic in the stubs
# only: at run time the class takes no parameters.)
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Conn = object

_log = structlog.get_logger("rfbatch.fleet")
T = TypeVar("T")

# Seconds to connect, and for any one statement: nothing waits on the database for ever.
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
POOL_MAX = 4
DEADLOCK_ATTEMPTS = 5
STOP_TIMEOUT = 5.0
# pg_advisory_xact_lock key for schema migrations ("rfbatch" in ASCII, as a number).
_MIGRATION_LOCK = 0x7266626174636800
# Seconds a worker's claims outlive its last heartbeat; it beats three times per lease.
LEASE_SECONDS = 30.0

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

# The fleet: workers and their leases; who claimed each file and batch; who still fills each
# open batch (see rfbatch.state.postgres.fleet).
_V2 = """
CREATE TABLE workers (
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz NOT NULL,
    stopped_at   timestamptz
);
ALTER TABLE files ADD COLUMN owner text;
CREATE INDEX files_by_owner ON files (owner, state);
ALTER TABLE batches ADD COLUMN owner text;
ALTER TABLE batches ADD COLUMN slots integer NOT NULL DEFAULT 0;
CREATE TABLE batch_fillers (
    batch_id  text NOT NULL,
    worker_id text NOT NULL,
    PRIMARY KEY (batch_id, worker_id)
);
"""

# Append only: entry i takes the schema from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def live(owner: str) -> str:
    """SQL: the worker named by column ``owner`` holds a lease (by the server's one clock)."""
    return (
        f"EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = {owner}"  # noqa: S608
        " AND w.lease_until > now())"
    )


def claimable(owner: str, me: str) -> str:
    """SQL: a row whose claimant is column ``owner`` is free for the worker ``me`` (a
    parameter): nobody's, its own, or a gone worker's."""
    return f"({owner} IS NULL OR {owner} = {me} OR NOT {live(owner)})"


def default_worker_id() -> str:
    """``host:pid``: unique among running workers, readable in ``rfbatch status``."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        worker_id: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._closed = False
        self.url = redact_url(url)
        # A ledger opened to work (not only to read) is a worker of the fleet: it has an id,
        # and claims what it does under a lease its heartbeat renews (state/postgres/fleet.py).
        self.worker_id = worker_id or ""
        self.lease_seconds = lease_seconds
        self._heartbeat: asyncio.Task[None] | None = None
        # Whether adopt has yet to take back what an earlier run under the same id left.
        self._adopted_own = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> Self:
        """Connect to the ledger at ``url`` and bring its schema up to date.

        ``exclusive``: join the fleet as a worker (``worker_id``, by default host and process
        id) whose lease is renewed every third of ``lease_seconds`` until :meth:`close`; a
        ledger opened only to read or to record webhook events takes no part.

        Raises :class:`~rfbatch.errors.ConfigError`, in one line naming the (redacted) URL, when
        the server cannot be reached or refuses, and when the schema is newer than this rfbatch.
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
        worker = (worker_id or default_worker_id()) if exclusive else None
        try:
            async with pool.acquire() as conn:
                await _migrate(conn, shown)
            ledger = cls(pool, url, clock, worker, lease_seconds)
            if worker is not None:
                await ledger.register()
        except BaseException:
            await pool.close()
            raise
        return ledger

    async def register(self) -> None:
        """Join the fleet (again) as :attr:`worker_id` and keep the lease renewed."""
        async with self._tx() as conn:
            # xmax is set on a row the upsert updated: an earlier run used this worker id, and
            # what it left claimed is this run's to take back (see adopt).
            earlier = await conn.fetchval(
                "INSERT INTO workers (worker_id, host, pid, lease_until) VALUES"
                " ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT (worker_id) DO"
                " UPDATE SET host = excluded.host, pid = excluded.pid, started_at = now(),"
                " heartbeat_at = now(), lease_until = excluded.lease_until, stopped_at = NULL"
                " RETURNING xmax <> 0",
                self.worker_id,
                socket.gethostname(),
                os.getpid(),
                self.lease_seconds,
            )
        self._adopted_own = not earlier
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def heartbeat(self) -> bool:
        """Renew this worker's lease; ``False`` if its row was gone (it registers again)."""
        async with self._tx() as conn:
            renewed = await conn.fetchval(
                "UPDATE workers SET heartbeat_at = now(), lease_until = now() +"
                " make_interval(secs => $2) WHERE worker_id = $1 RETURNING 1",
                self.worker_id,
                self.lease_seconds,
            )
        return renewed is not None

    async def _beat(self) -> None:
        """Renew the lease a third of it at a time. A database that cannot be reached for a
        whole lease lets the claims lapse: peers take the work over, and this worker's own
        ledger calls fail meanwhile, so it cannot quietly go on with claims it lost."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self.heartbeat():
                    await self.register()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                _log.warning("fleet.heartbeat_failed", worker=self.worker_id, error=reason)

    async def close(self) -> None:
        """Close every connection. Safe to call twice."""
        if self._closed:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        try:
            if self.worker_id and not self._pool.is_closing():
                # A clean stop ends the lease now: peers need not wait for it to lapse.
                async with self._pool.acquire(timeout=STOP_TIMEOUT) as conn:
                    await conn.execute(
                        "UPDATE workers SET lease_until = now(), stopped_at = now()"
                        " WHERE worker_id = $1",
                        self.worker_id,
                        timeout=STOP_TIMEOUT,
                    )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the lease lapses by itself
        finally:
            self._closed = True
            await self._pool.close()

    async def check_writable(self) -> None:
        """Raise unless a write could be committed now (the daemon's readiness check)."""
        async with self._tx() as conn:
            await conn.execute("SELECT 1 FROM rfbatch_schema FOR UPDATE")

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` (one transaction), again if PostgreSQL broke a deadlock by aborting it:
        workers writing overlapping rows can lock them in opposite orders."""
        for attempt in range(DEADLOCK_ATTEMPTS):
            try:
                return await call()
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

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
