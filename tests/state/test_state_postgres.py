"""What only the PostgreSQL ledger does: shared by processes, migrated once, refused when newer."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import anyio
import asyncpg
import pytest

from rfbatch.errors import ConfigError
from rfbatch.state.postgres import SCHEMA_VERSION, PostgresLedger
from tests.state.postgres_support import PostgresBackend, database_url, throwaway_server
from tests.state.support import ROOT, ff


async def test_workers_starting_together_migrate_once_and_share_what_they_commit(
    pg: PostgresBackend,
) -> None:
    url = await pg.url()
    opened: list[PostgresLedger] = []

    async def start() -> None:
        opened.append(await PostgresLedger.open(url, exclusive=False))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    try:
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM rfbatch_schema")
        finally:
            await conn.close()
        assert [r[0] for r in versions] == [SCHEMA_VERSION]
        first, second = opened[0], opened[1]
        await first.filter_new([ff("a.jpg")])
        assert (await second.get_file(ROOT / "a.jpg")) is not None
        # One file offered to two workers at once is recorded once.
        both = [ff("b.jpg")]
        await first.filter_new(both)
        await second.filter_new(both)
        assert (await second.counts())["seen"] == 2
    finally:
        for ledger in opened:
            await ledger.close()


async def test_a_newer_schema_is_refused_in_one_line(pg: PostgresBackend) -> None:
    url = await pg.url()
    async with await PostgresLedger.open(url):
        pass
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE rfbatch_schema SET version = $1", SCHEMA_VERSION + 6)
    finally:
        await conn.close()
    with pytest.raises(ConfigError) as caught:
        await PostgresLedger.open(url)
    message = str(caught.value)
    assert "\n" not in message
    assert f"schema version {SCHEMA_VERSION + 6}" in message
    assert "upgrade rfbatch" in message


async def test_an_unreachable_server_is_a_config_error_naming_it_without_its_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"postgresql://rf:s3cret@127.0.0.1:{port}/ledger"
        with anyio.fail_after(30), pytest.raises(ConfigError) as caught:
            await PostgresLedger.open(url)
    message = str(caught.value)
    assert f"127.0.0.1:{port}/ledger" in message
    assert "s3cret" not in message


async def test_paths_that_are_not_utf8_round_trip_exactly(pg: PostgresBackend) -> None:
    odd = ff("cam\udcff/img\udcfe.jpg")
    async with await pg.open() as ledger:
        assert await ledger.filter_new([odd]) == [odd]
        names = await ledger.assign_members("odd-batch", [odd])
        await ledger.mark([odd.path], "uploaded", error="bad \udcff byte\x00")
        row = await ledger.get_file(odd.path)
        assert row is not None
        assert row.path == Path(odd.location)
        assert row.rel == odd.rel
        assert row.last_error is not None
        assert "\x00" not in row.last_error
        assert row.member_name == names[odd.path]
        # The name is stored under the path's exact bytes: asked again, the same name.
        assert await ledger.assign_members("odd-batch", [odd]) == names


async def test_a_throwaway_server_serves_when_none_runs() -> None:
    # What `make test` falls back to on a machine without PostgreSQL on 127.0.0.1:5432. Its
    # folder is not tmp_path: the server runs as its own user, who must reach the folder until
    # it is stopped at exit (pytest-xdist's per-worker temporary folders are private).
    folder = Path(tempfile.mkdtemp(prefix="rfbatch-pg-test-"))
    server = await anyio.to_thread.run_sync(throwaway_server, folder)
    url = database_url("postgres", server)
    async with await PostgresLedger.open(url) as ledger:
        assert await ledger.filter_new([ff("c.jpg")]) == [ff("c.jpg")]
    async with await PostgresLedger.open(url) as again:
        assert (await again.counts())["seen"] == 1


async def test_a_ledger_of_the_first_schema_is_migrated_and_its_files_adopted(
    pg: PostgresBackend,
) -> None:
    from rfbatch.state.postgres.connection import MIGRATIONS

    url = await pg.url()
    conn = await asyncpg.connect(url)
    try:  # what the first release of the PostgreSQL ledger left: schema 1, a shard in flight
        await conn.execute(MIGRATIONS[0])
        await conn.execute("CREATE TABLE rfbatch_schema (version integer NOT NULL)")
        await conn.execute("INSERT INTO rfbatch_schema VALUES (1)")
        await conn.execute(
            "INSERT INTO files (path, root, rel, size, mtime_ns, kind, state, batch_id,"
            " updated_at) VALUES ($1, $2, 'old.jpg', 10, 1000, 'image', 'uploading', 'b0', 0)",
            str(ROOT / "old.jpg").encode(),
            str(ROOT).encode(),
        )
    finally:
        await conn.close()
    async with await PostgresLedger.open(url, worker_id="upgraded") as ledger:
        [row] = await ledger.adopt()  # nobody's claim: an upgraded ledger's rows are free
        assert row.path == ROOT / "old.jpg"
        assert row.state == "seen"
        assert row.batch_id == "b0"
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT version FROM rfbatch_schema") == SCHEMA_VERSION
    finally:
        await conn.close()
