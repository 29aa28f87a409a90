"""Bandwidth caps: a token bucket shared by every transfer in one direction.

Bytes are taken from the bucket as chunks go out (or come in); when it is empty the transfer
sleeps until enough has refilled. The bucket holds at most one second of tokens, so a pause does
not buy a burst that would break the cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


class RateLimiter:
    def __init__(
        self, bytes_per_second: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if bytes_per_second < 1:
            raise ValueError("bytes_per_second must be >= 1")
        self.rate = float(bytes_per_second)
        self._clock = clock
        self._tokens = self.rate
        self._stamp = clock()
        self._lock = anyio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may pass. Waiters are served in turn (the lock is fair)."""
        async with self._lock:
            self._refill()
            self._tokens -= n
            if self._tokens < 0:
                # Go into debt and sleep it off: a chunk larger than the bucket still passes.
                await anyio.sleep(-self._tokens / self.rate)
                self._refill()


class ByteBudget:
    """At most ``limit`` bytes in flight at once (a weighted semaphore).

    A single item larger than the limit is let through alone rather than never.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.in_use = 0
        self._changed = anyio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._changed:
            while self.in_use and self.in_use + n > self.limit:
                await self._changed.wait()
            self.in_use += n

    async def release(self, n: int) -> None:
        # Shielded: a release is usually awaited in a ``finally`` of a worker being cancelled,
        # where taking the lock would raise at once and the bytes would stay counted forever.
        with anyio.CancelScope(shield=True):
            async with self._changed:
                self.in_use -= n
                self._changed.notify_all()
