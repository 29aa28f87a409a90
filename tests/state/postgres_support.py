"""A PostgreSQL server for the tests: each backend gets a database of its own, dropped after.

The server is the one ``RFBATCH_TEST_PG_URL`` names (an admin URL), else the one on
127.0.0.1:5432 (trust authentication, user ``postgres``), else one started for the test run
from the ``pgserver`` wheel (``make test`` installs it): so a fresh clone runs these tests on any
machine, and they are never skipped. A server that stops answering fails the test, saying so.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from rfbatch.state.ledger import Ledger
from rfbatch.state.postgres import PostgresLedger
from tests.state.support import Clock

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_admin_url: str | None = None


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def throwaway_server(folder: Path) -> str:
    """Start PostgreSQL from the ``pgserver`` wheel (binaries inside: nothing to install on
    the machine) in ``folder``, on a Unix socket only; it stops when this process exits.
    Returns its admin URL."""
    with warnings.catch_warnings():  # platformdirs on a machine without XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server  # a dev dependency, only when needed

        server = get_server(folder, cleanup_mode="delete")
    atexit.register(server.cleanup)
    return str(server.get_uri())


def admin_url() -> str:
    """``RFBATCH_TEST_PG_URL``; else the server on 127.0.0.1:5432; else a throwaway one
    (also when ``RFBATCH_TEST_PG=throwaway``)."""
    global _admin_url
    if _admin_url is None:
        given = os.environ.get("RFBATCH_TEST_PG_URL")
        if given:
            _admin_url = given
        elif os.environ.get("RFBATCH_TEST_PG") != "throwaway" and _reachable("127.0.0.1", 5432):
            _admin_url = DEFAULT_URL
        else:
            _admin_url = throwaway_server(Path(tempfile.mkdtemp(prefix="rfbatch-pg-")))
    return _admin_url


def database_url(name: str, admin: str | None = None) -> str:
    """The admin URL with its database replaced by ``name``."""
    parts = urlsplit(admin or admin_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


async def admin() -> asyncpg.Connection:
    url = admin_url()
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"the PostgreSQL tests cannot reach {url}: {exc}") from exc


async def create_database() -> str:
    name = f"rfbatch_t_{uuid.uuid4().hex[:16]}"
    conn = await admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class PostgresBackend:
    """Ledgers over one fresh database, made at the first :meth:`open`."""

    name: str | None = field(default=None)

    async def url(self) -> str:
        if self.name is None:
            self.name = await create_database()
        return database_url(self.name)

    async def open(self, *, clock: Clock = time.time) -> Ledger:
        return await PostgresLedger.open(await self.url(), clock=clock)

    async def dispose(self) -> None:
        if self.name is not None:
            await drop_database(self.name)


@pytest.fixture
async def pg() -> AsyncIterator[PostgresBackend]:
    """A fresh database for the test, dropped after it."""
    backend = PostgresBackend()
    try:
        yield backend
    finally:
        await backend.dispose()


@pytest.fixture
async def ledger_url() -> AsyncIterator[str]:
    """The URL of a fresh database for the test (a ledger for rfbatch processes), dropped after."""
    name = await create_database()
    try:
        yield database_url(name)
    finally:
        await drop_database(name)
