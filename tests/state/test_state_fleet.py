"""The fleet on one PostgreSQL ledger: claims, leases, fillers and the status of the workers.

Workers are ledgers opened on one database, each with its own id. A worker "dies" here as a
SIGKILLed process would: its heartbeat stops and its lease lapses (set in the past, rather than
waited for); a clean close ends its lease at once.
"""

from __future__ import annotations

import random

import anyio
import asyncpg

from rfbatch.state.fleet import Fleet, SoloFleet, fleet_of
from rfbatch.state.postgres import PostgresLedger
from tests.state.postgres_support import PostgresBackend
from tests.state.support import ROOT, SqliteBackend, ff


async def worker(pg: PostgresBackend, name: str) -> PostgresLedger:
    return await PostgresLedger.open(await pg.url(), worker_id=name)


async def kill(pg: PostgresBackend, ledger: PostgresLedger) -> None:
    """What SIGKILL does to a worker, as the others see it: no more heartbeats, lease lapsed."""
    assert ledger._heartbeat is not None
    ledger._heartbeat.cancel()
    conn = await asyncpg.connect(await pg.url())
    try:
        await conn.execute(
            "UPDATE workers SET lease_until = now() - interval '1 second' WHERE worker_id = $1",
            ledger.worker_id,
        )
    finally:
        await conn.close()


def test_the_postgres_ledger_is_a_fleet() -> None:
    # Checked by mypy: the protocol's every method and attribute.
    fleet: type[Fleet] = PostgresLedger
    assert fleet.shared


async def test_workers_scanning_one_tree_at_once_each_get_a_disjoint_share(
    pg: PostgresBackend,
) -> None:
    files = [ff(f"cam/{i:05}.jpg") for i in range(3000)]
    workers = [await worker(pg, f"w{n}") for n in range(3)]
    rounds: list[dict[str, list[str]]] = []

    async def scan(ledger: PostgresLedger, seed: int, got: dict[str, list[str]]) -> None:
        order = files[:]
        random.Random(seed).shuffle(order)  # overlapping chunks in different orders
        for start in range(0, len(order), 250):
            for f in await ledger.filter_new(order[start : start + 250]):
                got.setdefault(ledger.worker_id, []).append(f.location)

    try:
        for round_ in range(2):
            got: dict[str, list[str]] = {}
            async with anyio.create_task_group() as tg:
                for n, ledger in enumerate(workers):
                    tg.start_soon(scan, ledger, n + 10 * round_, got)
            rounds.append(got)
        first = rounds[0]
        assert sum(len(v) for v in first.values()) == len(files)  # none returned twice
        assert set().union(*first.values()) == {f.location for f in files}
        assert len(first) == 3, "every worker took part"
        # Seen again, each file goes back to the worker that holds it, and to no other.
        assert {k: set(v) for k, v in rounds[1].items()} == {k: set(v) for k, v in first.items()}
    finally:
        for ledger in workers:
            await ledger.close()


async def test_a_dead_workers_files_are_adopted_and_only_its_own(pg: PostgresBackend) -> None:
    alive, doomed = await worker(pg, "alive"), await worker(pg, "doomed")
    try:
        assert await doomed.filter_new([ff("d1.jpg"), ff("d2.jpg"), ff("d3.jpg")])
        await doomed.create_shard("b1", [ROOT / "d1.jpg"], size=10)
        await doomed.mark([ROOT / "d2.jpg"], "failed", error="timeout")
        assert await alive.filter_new([ff("a1.jpg")])
        await alive.create_shard("b1", [ROOT / "a1.jpg"], size=10)

        assert await alive.adopt() == []  # doomed is still live
        assert await alive.filter_new([ff("d3.jpg")]) == []  # and holds its waiting file
        await kill(pg, doomed)

        adopted = {r.path.name: r for r in await alive.adopt()}
        assert set(adopted) == {"d1.jpg", "d2.jpg", "d3.jpg"}
        assert adopted["d1.jpg"].state == "seen"
        assert adopted["d1.jpg"].last_error == "interrupted"
        assert adopted["d1.jpg"].batch_id == "b1"  # resumable into its batch
        assert adopted["d2.jpg"].state == "failed"
        a1 = await alive.get_file(ROOT / "a1.jpg")
        assert a1 is not None
        assert a1.state == "packed"
        assert await alive.adopt() == []  # adopted once
        # Now the adopter's: offered by a rescan, they come back to it.
        assert len(await alive.filter_new([ff("d1.jpg"), ff("d3.jpg")])) == 2
    finally:
        await alive.close()
        await doomed.close()


async def test_each_batch_is_driven_by_one_live_worker(pg: PostgresBackend) -> None:
    a, b = await worker(pg, "a"), await worker(pg, "b")
    try:
        for n in range(6):
            await a.create_batch(f"batch-{n}", "images")
            await a.update_batch(f"batch-{n}", state="sealed")
        got_a: list[str] = []
        got_b: list[str] = []

        async def claim(ledger: PostgresLedger, into: list[str]) -> None:
            into += await ledger.claim_batches(["sealed"], 4)

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, a, got_a)
            tg.start_soon(claim, b, got_b)
        assert not set(got_a) & set(got_b)
        assert len(got_a) + len(got_b) == 6
        # A worker keeps what it holds; nobody else can take it while it lives.
        assert set(await a.claim_batches(["sealed"], 10)) == set(got_a)
        await kill(pg, a)
        assert set(await b.claim_batches(["sealed"], 10)) == {f"batch-{n}" for n in range(6)}
    finally:
        await a.close()
        await b.close()


async def test_the_fleet_keeps_to_the_item_limit_and_waits_for_every_filler(
    pg: PostgresBackend,
) -> None:
    workers = [await worker(pg, f"w{n}") for n in range(3)]
    first = workers[0]
    try:
        await first.create_batch("shared", "images")
        assert all([await w.join("shared") for w in workers])
        granted = [0, 0, 0]

        async def take(n: int) -> None:
            while got := await workers[n].take_slots("shared", 7, 100):
                granted[n] += got

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(take, n)
        assert sum(granted) == 100

        assert await first.seal("shared")
        assert not await workers[1].seal("shared")  # sealed once
        assert not await workers[1].join("shared")  # nobody joins a sealed batch
        assert await first.take_slots("shared", 5, 1000) == 0
        assert await first.busy("shared")  # w1 and w2 still fill it
        await workers[1].leave("shared")
        assert await first.busy("shared")
        await kill(pg, workers[2])  # a dead filler holds nobody up
        assert not await first.busy("shared")
    finally:
        for w in workers:
            await w.close()


async def test_status_shows_workers_their_leases_and_what_they_hold(pg: PostgresBackend) -> None:
    up = await PostgresLedger.open(await pg.url(), worker_id="up", lease_seconds=1.5)
    done = await worker(pg, "done")
    try:
        await up.filter_new([ff("u.jpg")])
        await done.filter_new([ff("x.jpg")])
        await done.close()  # a clean stop ends the lease at once
        await anyio.sleep(2.5)  # past the lease: only the heartbeat keeps "up" live
        found = await up.fleet_status()
        by_id = {w.worker_id: w for w in found.workers}
        assert by_id["up"].live
        assert by_id["up"].files_claimed == 1
        assert by_id["up"].heartbeat_age < 1.5
        assert not by_id["done"].live
        assert by_id["done"].stopped
        assert found.unclaimed == 1  # x.jpg, until someone adopts it
        assert found.files["seen"] == 2
    finally:
        await up.close()


async def test_a_sqlite_ledger_is_a_fleet_of_one(tmp_path: object) -> None:
    from pathlib import Path

    backend = SqliteBackend(Path(str(tmp_path)) / "state")
    async with await backend.open() as ledger:
        fleet = fleet_of(ledger)
        assert isinstance(fleet, SoloFleet)
        assert not fleet.shared
        await ledger.filter_new([ff("s.jpg")])
        await ledger.create_shard("solo-b", [ROOT / "s.jpg"], size=10)
        await ledger.create_batch("solo-b", "images")
        assert await fleet.take_slots("solo-b", 32, 40) == 32
        assert await fleet.take_slots("solo-b", 32, 40) == 8
        assert await fleet.take_slots("solo-b", 32, 40) == 0
        adopted = await fleet.adopt()
        assert [r.path.name for r in adopted] == ["s.jpg"]
        assert adopted[0].batch_id == "solo-b"
        assert await fleet.seal("solo-b")
        assert not await fleet.seal("solo-b")
        assert await fleet.join("solo-b")  # a restarted run's resumed files still go in
        assert await fleet.claim_batches(["sealed"], 5) == ["solo-b"]


async def test_a_worker_restarted_under_its_name_takes_back_what_it_left(
    pg: PostgresBackend,
) -> None:
    first = await worker(pg, "ingest-1")
    await first.filter_new([ff("r1.jpg"), ff("r2.jpg")])
    await first.create_shard("rb", [ROOT / "r1.jpg"], size=10)
    await kill(pg, first)  # SIGKILLed, then started again by systemd with the same name
    await first._pool.close()
    again = await worker(pg, "ingest-1")
    other = await worker(pg, "ingest-2")
    try:
        assert await other.adopt() == []  # not gone: it came back
        adopted = {r.path.name: r.state for r in await again.adopt()}
        assert adopted == {"r1.jpg": "seen", "r2.jpg": "seen"}
        await again.create_shard("rb", [ROOT / "r1.jpg"], size=10)
        assert await again.adopt() == []  # its own live work is never reset
    finally:
        await again.close()
        await other.close()
