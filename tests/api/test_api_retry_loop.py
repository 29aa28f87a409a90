"""The bounded retry loop on its own: waits, caps and deadlines, with a fake clock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from rfbatch.api import RetryEvent, RetryPolicy
from rfbatch.http.retry import Retrier, Retryable


class Flaky(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def classify(exc: BaseException) -> Retryable | None:
    if not isinstance(exc, Flaky):
        return None
    cap = 2 if exc.reason == "500" else None
    return Retryable(exc.reason, retry_after=exc.retry_after, max_attempts=cap)


def failing(
    *errors: BaseException, result: str = "done"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, fn


def test_waits_grow_exponentially_up_to_wait_max() -> None:
    policy = RetryPolicy(wait_initial=1.0, wait_max=10.0, wait_jitter=0.0)
    retrier = Retrier(policy, log_event="t.retry")
    assert [retrier.wait_for(n, None) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert retrier.wait_for(10_000, None) == 10.0


def test_retry_after_raises_the_wait_but_never_lowers_it() -> None:
    policy = RetryPolicy(wait_initial=1.0, wait_max=10.0, wait_jitter=0.0)
    retrier = Retrier(policy, log_event="t.retry")
    assert retrier.wait_for(1, 30.0) == 30.0
    assert retrier.wait_for(3, 0.5) == 4.0


def test_jitter_stays_within_its_bound() -> None:
    policy = RetryPolicy(wait_initial=0.5, wait_max=100.0, wait_jitter=1.0)
    retrier = Retrier(policy, log_event="t.retry", rng=random.Random(3))
    waits = [retrier.wait_for(1, None) for _ in range(200)]
    assert all(0.5 <= w <= 1.5 for w in waits)
    assert len(set(waits)) > 100


async def test_success_after_failures_reports_each_retry() -> None:
    policy = RetryPolicy(attempts=5, wait_initial=0.001, wait_max=0.002, wait_jitter=0)
    events: list[RetryEvent] = []
    retrier = Retrier(policy, log_event="t.retry", hooks=[events.append])
    calls, fn = failing(Flaky("503"), Flaky("timeout"))
    assert await retrier.call("op", fn, classify) == "done"
    assert len(calls) == 3
    assert [(e.operation, e.attempt, e.reason) for e in events] == [
        ("op", 1, "503"),
        ("op", 2, "timeout"),
    ]
    assert dict(retrier.counts) == {"503": 1, "timeout": 1}


async def test_non_retryable_errors_pass_straight_through() -> None:
    retrier = Retrier(RetryPolicy(attempts=5), log_event="t.retry")
    calls, fn = failing(KeyError("nope"))
    with pytest.raises(KeyError):
        await retrier.call("op", fn, classify)
    assert len(calls) == 1


async def test_attempts_bound_the_loop() -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.001, wait_jitter=0)
    retrier = Retrier(policy, log_event="t.retry")
    calls, fn = failing(*[Flaky("429") for _ in range(10)])
    with pytest.raises(Flaky):
        await retrier.call("op", fn, classify)
    assert len(calls) == 3


async def test_a_reason_cap_stops_earlier_than_the_attempts() -> None:
    policy = RetryPolicy(attempts=9, wait_initial=0.001, wait_max=0.001, wait_jitter=0)
    retrier = Retrier(policy, log_event="t.retry")
    calls, fn = failing(Flaky("503"), Flaky("500"), Flaky("503"), Flaky("500"), Flaky("503"))
    with pytest.raises(Flaky, match="500"):
        await retrier.call("op", fn, classify)
    assert len(calls) == 4


async def test_total_time_bounds_the_loop() -> None:
    now = [0.0]
    policy = RetryPolicy(attempts=100, timeout=10.0, wait_initial=0.001, wait_max=0.001)
    retrier = Retrier(policy, log_event="t.retry", clock=lambda: now[0])

    async def slow_failure() -> str:
        now[0] += 4.0  # every attempt "takes" four seconds
        raise Flaky("504")

    with pytest.raises(Flaky):
        await retrier.call("op", slow_failure, classify)
    assert now[0] == 12.0  # attempts at 0-4, 4-8, 8-12; a fourth would start past 10 s
    assert retrier.counts["504"] == 2
