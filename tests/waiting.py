"""The one way tests wait for a condition: poll a probe until it yields something truthy.

Deadlines are generous because the suite runs on a loaded two-core machine; a condition that
is met returns at once, so a long deadline costs nothing when the code under test is correct.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

import anyio

T = TypeVar("T")

TIMEOUT = 60.0
INTERVAL = 0.02


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


@overload
async def wait_for(
    probe: Callable[[], Awaitable[T]],
    what: str,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> T: ...


@overload
async def wait_for(
    probe: Callable[[], T], what: str, *, timeout: float = TIMEOUT, interval: float = INTERVAL
) -> T: ...


async def wait_for(
    probe: Callable[[], object],
    what: str,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> object:
    """Call ``probe`` (sync or async) until it returns something truthy, and return that.

    Fails with ``what`` and the last value seen once ``timeout`` seconds pass, also when a
    single call of the probe hangs.
    """
    last: object = None
    with anyio.move_on_after(timeout):
        while True:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
            await anyio.sleep(interval)
    raise _timed_out(what, timeout, last)


def wait_for_sync(
    probe: Callable[[], T], what: str, *, timeout: float = TIMEOUT, interval: float = INTERVAL
) -> T:
    """The twin of `wait_for` for tests that run no event loop (threads, subprocesses)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value)
        time.sleep(interval)
