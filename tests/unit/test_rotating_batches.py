"""Rotating batches over a ledger: windows, item limits counted in the ledger, and batches a
gone worker left open. Both ledgers: the fleet of one (SQLite) and a shared one (PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.pipeline.batches import InFlight, RotatingBatches
from rfbatch.state.fleet import fleet_of
from rfbatch.state.ledger import Ledger
from tests.state.support import BACKENDS, ff


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=list(BACKENDS))
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    backend = BACKENDS[request.param](tmp_path)
    try:
        async with await backend.open() as opened:
            yield opened
    finally:
        await backend.dispose()


def rotation(ledger: Ledger, clock: Clock, max_items: int = 100) -> RotatingBatches:
    return RotatingBatches(
        ledger,
        fleet_of(ledger),
        prefix="cam",
        window_seconds=60.0,
        max_items=max_items,
        in_flight=InFlight(),
        clock=clock,
    )


async def test_a_batch_fills_to_its_limit_then_the_next_opens(ledger: Ledger) -> None:
    clock = Clock()
    batches = rotation(ledger, clock, max_items=40)
    got = [await batches.batch_for(ff(f"{i}.jpg")) for i in range(100)]
    assert [got.count(b) for b in sorted(set(got))] == [40, 40, 20]
    assert sorted(set(got))[0].endswith("-img-000")
    states = {row.batch_id: row.state for row in await ledger.list_batches()}
    assert sorted(states.values()) == ["open", "sealed", "sealed"]


async def test_two_workers_fill_one_batch_per_window_within_its_limit() -> None:
    from rfbatch.state.postgres import PostgresLedger
    from tests.state.postgres_support import PostgresBackend

    pg = PostgresBackend()
    clock = Clock()
    a = await PostgresLedger.open(await pg.url(), worker_id="a", clock=clock)
    b = await PostgresLedger.open(await pg.url(), worker_id="b", clock=clock)
    try:
        first, second = rotation(a, clock, max_items=100), rotation(b, clock, max_items=100)
        got = [await (first if i % 2 else second).batch_for(ff(f"{i}.jpg")) for i in range(150)]
        per_batch = {batch: got.count(batch) for batch in set(got)}
        assert len(per_batch) == 2  # 150 files: one full batch, then the next of the window
        assert max(per_batch.values()) <= 100
        assert all(batch.startswith("cam-") for batch in per_batch)
    finally:
        await a.close()
        await b.close()
        await pg.dispose()


async def test_a_batch_left_open_past_its_window_is_sealed_by_whoever_rotates(
    ledger: Ledger,
) -> None:
    clock = Clock()
    gone = rotation(ledger, clock)
    left = await gone.batch_for(ff("a.jpg"))  # its worker dies here, the batch open
    await ledger.create_batch("manual-upload", "images")  # a one-shot upload's: not rotation's
    clock.now += 61
    survivor = rotation(ledger, clock)
    await survivor.seal_expired()
    states = {row.batch_id: row.state for row in await ledger.list_batches()}
    assert states == {left: "sealed", "manual-upload": "open"}
