"""Bandwidth caps and the in-flight byte budget, on a fake clock (no real waiting on speed)."""

from __future__ import annotations

import anyio
import pytest

from rfbatch.transfer.ratelimit import ByteBudget, RateLimiter


async def test_rate_limiter_sleeps_off_what_exceeds_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    limiter = RateLimiter(1000, clock=lambda: now[0])
    for _ in range(5):
        await limiter.take(500)  # 2,500 bytes at 1,000 B/s with a 1,000-byte bucket
    assert sum(slept) == pytest.approx(1.5)
    assert now[0] == pytest.approx(1.5)


async def test_byte_budget_holds_back_until_bytes_are_released() -> None:
    budget = ByteBudget(100)
    await budget.acquire(60)
    entered = anyio.Event()

    async def second() -> None:
        await budget.acquire(60)
        entered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert not entered.is_set()
        await budget.release(60)
        await entered.wait()
    assert budget.in_use == 60


async def test_an_item_over_the_budget_passes_alone() -> None:
    budget = ByteBudget(10)
    await budget.acquire(50)
    assert budget.in_use == 50


async def test_a_holder_cancelled_while_it_sends_still_returns_its_bytes() -> None:
    budget = ByteBudget(100)
    holding = anyio.Event()
    passed = anyio.Event()

    async def holder(scope: anyio.CancelScope) -> None:
        with scope:
            await budget.acquire(80)
            try:
                holding.set()
                await anyio.sleep_forever()
            finally:
                # As in the upload's shard worker: released in a finally of a cancelled task.
                await budget.release(80)

    async def next_in_line() -> None:
        await budget.acquire(80)
        passed.set()

    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()
        tg.start_soon(holder, scope)
        await holding.wait()
        tg.start_soon(next_in_line)
        await anyio.wait_all_tasks_blocked()
        assert not passed.is_set()
        scope.cancel()
        with anyio.fail_after(10):
            await passed.wait()
    assert budget.in_use == 80


async def test_a_release_inside_a_cancelled_scope_is_not_lost() -> None:
    budget = ByteBudget(100)
    await budget.acquire(100)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await budget.release(100)
    assert budget.in_use == 0
