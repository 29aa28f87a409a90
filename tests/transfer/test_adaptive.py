"""Adaptive concurrency: the limit follows measured throughput, within its ceiling."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import cast

import anyio
import pytest

from rfbatch.transfer.adaptive import SEND_SLACK, AdaptiveLimit, Concurrency, SendMeter

MB = 1_000_000
TICK = 0.1


async def run_path(
    limit: AdaptiveLimit,
    rate_at: Callable[[int], float],
    seconds: float,
    now: list[float],
    *,
    demand: int = 64,
) -> list[int]:
    """``demand`` transfers hold slots for good while a simulated path moves ``rate_at(n)``
    bytes a second with ``n`` of them in flight; returns the limit after each tick."""
    seen = []
    async with anyio.create_task_group() as tg:
        for _ in range(demand):
            tg.start_soon(hold_forever, limit)
        # Let every task take its slot or queue for one.
        while limit.in_use < min(limit.limit, demand):
            await anyio.sleep(0)
        for _ in range(round(seconds / TICK)):
            now[0] += TICK
            limit.moved(int(rate_at(limit.in_use) * TICK))
            for _ in range(5):  # let admitted waiters take the new slots
                await anyio.sleep(0)
            seen.append(limit.limit)
        tg.cancel_scope.cancel()
    return seen


async def hold_forever(limit: AdaptiveLimit) -> None:
    async with limit.slot():
        await anyio.sleep_forever()


def capped_link(per_connection: float, total: float) -> Callable[[int], float]:
    return lambda n: min(n * per_connection, total)


async def test_it_grows_while_throughput_grows_and_stops_where_the_link_is_full() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 64), name="t", clock=lambda: now[0])
    # 5 MB/s a connection, 100 MB/s in all: the link is full from twenty connections on.
    seen = await run_path(limit, capped_link(5 * MB, 100 * MB), 20, now, demand=100)
    # 8 → 16 doubled the rate (40 → 80 MB/s), 32 added a quarter (100): both kept; 64 added
    # nothing, so it went back to 32 and holds there.
    assert max(seen) == 64
    assert seen[-1] == 32


async def test_it_grows_to_the_ceiling_when_every_step_pays() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 64), name="t", clock=lambda: now[0])
    seen = await run_path(limit, capped_link(1 * MB, 1000 * MB), 20, now, demand=100)
    assert seen[-1] == 64


async def test_a_step_the_workers_fill_without_waiting_must_still_pay() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 64), name="t", clock=lambda: now[0])
    # Sixty-four workers for sixty-four slots: at the top step nobody waits for a slot, yet
    # 64 connections bring only 90 MB/s where 32 brought 80, so the step is taken back.
    seen = await run_path(limit, capped_link(2.5 * MB, 90 * MB), 20, now, demand=64)
    assert max(seen) == 64
    assert seen[-1] == 32


async def test_a_doubling_that_brings_nothing_is_taken_back_and_tried_again_later() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 64), name="t", clock=lambda: now[0], reprobe=30)
    # A LAN limited by something else than concurrency: 100 MB/s whatever the count.
    seen = await run_path(limit, lambda n: 100 * MB, 80, now)
    assert set(seen) == {8, 16}  # probed, found no gain, went back
    assert seen[-1] == 8
    # Probed again after each 30 s hold: three probes in 80 s.
    probes = sum(1 for a, b in itertools.pairwise(seen) if b > a)
    assert probes == 3


async def test_the_limit_does_not_move_while_it_does_not_bind() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 64), name="t", clock=lambda: now[0])
    # Only four transfers want to run: the limit never binds, so there is nothing to learn.
    seen = await run_path(limit, capped_link(1 * MB, 100 * MB), 10, now, demand=4)
    assert set(seen) == {8}


async def test_storage_asking_to_slow_down_halves_the_limit() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(16, 64), name="t", clock=lambda: now[0])
    limit.throttled()
    assert limit.limit == 8
    limit.throttled()
    limit.throttled()
    limit.throttled()
    limit.throttled()
    assert limit.limit == 1  # never below one


async def test_a_fixed_limit_is_the_ceiling_and_never_moves() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(8, 24, adaptive=False), name="t", clock=lambda: now[0])
    seen = await run_path(limit, capped_link(1 * MB, 1000 * MB), 10, now)
    assert set(seen) == {24}
    limit.throttled()
    assert limit.limit == 24


async def test_the_ceiling_caps_growth() -> None:
    now = [0.0]
    limit = AdaptiveLimit(Concurrency(6, 10), name="t", clock=lambda: now[0])
    seen = await run_path(limit, capped_link(1 * MB, 1000 * MB), 20, now)
    assert max(seen) == 10 == seen[-1]
    assert limit.ceiling == 10


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="start and ceiling"):
        Concurrency(0, 4)


class Moved:
    def __init__(self) -> None:
        self.total = 0

    def moved(self, n: int) -> None:
        self.total += n


def test_a_put_is_credited_as_the_link_must_have_carried_it() -> None:
    pool = Moved()
    meter = SendMeter(cast(AdaptiveLimit, pool))
    meter.handed(SEND_SLACK)  # a fresh socket swallows this much at once: nothing yet
    assert pool.total == 0
    meter.handed(3 * MB)  # from here on the link is what takes bytes in
    assert pool.total == 3 * MB
    meter.delivered()  # storage answered: the slack has crossed too
    assert pool.total == SEND_SLACK + 3 * MB
    meter.delivered()
    assert pool.total == SEND_SLACK + 3 * MB  # never twice
