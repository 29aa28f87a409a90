"""Concurrency that adapts to the path: as many transfers in flight as it takes to fill it.

On a LAN a few transfers fill the link and more only add overhead. Across a WAN every request
waits a round trip and cloud storage paces each connection, so the link fills only with many
transfers at once. Neither number can be known in advance, so each direction starts at a modest
limit and probes: while the limit binds (a transfer had to wait for a slot), it is doubled, and
the step is kept only if throughput rose by a worthwhile share; otherwise the limit goes back
and holds. Paths change, so a held limit is probed again now and then; storage asking to slow
down (429, 503) halves it at once.

The limit never exceeds its ceiling, the configured worker count: that is what bounds memory,
load on the service, and the files a crash may send twice. A fixed limit (``adaptive=False``)
is simply the ceiling.

Throughput is measured in bytes per second over two windows of about a second, from the bytes
the transfers report as they move, so a long transfer counts while it runs rather than when it
ends (a PUT's last few megabytes, which may still sit in socket buffers, when storage answers).
A window right after a change, or after the pool stood idle, is not judged: new connections
are still shaking hands and filling fresh socket buffers in a burst.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog

log = structlog.get_logger("rfbatch.transfer")

# Seconds of traffic per measurement, and the gain a doubling must bring to be kept.
WINDOW_SECONDS = 1.0
WORTHWHILE_GAIN = 1.15
# Steady windows averaged into one rate (the warm-up window after a change not counted).
MEASURE_WINDOWS = 2
# How long a held limit stays unprobed while it keeps binding.
REPROBE_SECONDS = 30.0
# Bytes a PUT hands to its socket before the link has carried them: the kernel's send buffer
# (Linux grows it to 4 MiB) and what the path holds. They are credited only once storage
# answers, so a burst of new PUTs filling fresh buffers does not pass for throughput.
SEND_SLACK = 5 * 1024 * 1024


@dataclass(frozen=True)
class Concurrency:
    """How many transfers of one direction run at once: from ``start`` up to ``ceiling``."""

    start: int
    ceiling: int
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.start < 1 or self.ceiling < 1:
            raise ValueError("concurrency start and ceiling must be >= 1")


class AdaptiveLimit:
    """Slots for transfers, their number tuned by measured throughput (see the module)."""

    def __init__(
        self,
        concurrency: Concurrency,
        *,
        name: str,
        window: float = WINDOW_SECONDS,
        gain: float = WORTHWHILE_GAIN,
        reprobe: float = REPROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.ceiling = concurrency.ceiling
        self.adaptive = concurrency.adaptive
        start = concurrency.start if concurrency.adaptive else concurrency.ceiling
        self._slots = anyio.CapacityLimiter(min(start, self.ceiling))
        self._window, self._gain, self._reprobe, self._clock = window, gain, reprobe, clock
        self._since = clock()
        self._bytes = 0
        self._bound = False  # whether a transfer waited for a slot in this window
        # A window is judged only after a whole window at the same limit with the pool busy:
        # the first one after a change (or an idle spell, or the start) holds new connections'
        # handshakes and the burst that fills fresh socket buffers, not the path's rate.
        self._fresh = True
        # The steady windows' rates at the current limit, and whether any of them was bound.
        self._rates: list[float] = []
        self._bound_seen = False
        # A probe under way: the limit and the rate before it.
        self._probe: tuple[int, float] | None = None
        self._next_probe = self._since

    @property
    def limit(self) -> int:
        return int(self._slots.total_tokens)

    @property
    def in_use(self) -> int:
        return int(self._slots.borrowed_tokens)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot while a transfer runs."""
        if self._slots.available_tokens < 1:
            self._bound = True
        try:
            async with self._slots:
                yield
        finally:
            if self._slots.borrowed_tokens == 0:
                # Idle: the windows' rates say nothing of the path.
                self._fresh = True
                self._rates.clear()

    def moved(self, n: int) -> None:
        """``n`` bytes went over the wire; judges the window when it is over."""
        self._bytes += n
        if not self.adaptive:
            return
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= self._window:
            # The limit bound if a transfer waited for a slot in the window, or waits now.
            bound = self._bound or self._slots.statistics().tasks_waiting > 0
            rate = self._bytes / elapsed
            self._since, self._bytes, self._bound = now, 0, False
            if self._fresh:
                self._fresh = False
            else:
                self._judge(now, rate, bound)

    def sending(self) -> SendMeter:
        """A meter for one PUT attempt: what it hands over, credited as the link carries it."""
        return SendMeter(self)

    def throttled(self) -> None:
        """Storage asked to slow down: halve the limit and hold it for a while."""
        if not self.adaptive:
            return
        self._probe = None
        self._next_probe = self._clock() + self._reprobe
        self._set(max(1, self.limit // 2), "throttled", None)

    def _judge(self, now: float, rate: float, bound: bool) -> None:
        """One steady window's ``rate``; ``bound``: whether the limit held a transfer back."""
        # Rates are judged over MEASURE_WINDOWS windows: transfers end in lumps (a shard's
        # last megabytes are credited when storage answers), so one window is noisy.
        self._rates.append(rate)
        self._bound_seen = self._bound_seen or bound
        if len(self._rates) < MEASURE_WINDOWS:
            return
        rate = sum(self._rates) / len(self._rates)
        bound = self._bound_seen
        self._rates.clear()
        self._bound_seen = False
        if self._probe is not None:
            # Judged by the rate alone, bound or not: a pool whose workers cannot all be busy
            # (fewer files than slots, or the limit at the worker count) must still earn a
            # step, or it would keep every step it cannot fill.
            before, before_rate = self._probe
            self._probe = None
            if rate >= before_rate * self._gain:
                self._next_probe = now  # it paid: try the next step at once
                log.info(
                    "transfer.concurrency.kept",
                    pool=self.name,
                    limit=self.limit,
                    mb_per_s=round(rate / 1e6, 1),
                )
            else:
                self._next_probe = now + self._reprobe
                self._set(before, "no gain", rate)
            return
        if bound and now >= self._next_probe and self.limit < self.ceiling:
            self._probe = (self.limit, rate)
            self._set(min(self.ceiling, self.limit * 2), "probe", rate)

    def _set(self, limit: int, why: str, rate: float | None) -> None:
        if limit == self.limit:
            return
        self._slots.total_tokens = limit
        self._fresh = True
        self._rates.clear()
        self._bound_seen = False
        log.info(
            "transfer.concurrency",
            pool=self.name,
            limit=limit,
            why=why,
            mb_per_s=None if rate is None else round(rate / 1e6, 1),
        )


class SendMeter:
    """Credits one PUT's bytes to its pool: all but the last :data:`SEND_SLACK` of what was
    handed over as it goes, the rest when storage has answered (what a socket has accepted is
    not yet on the wire; what storage acknowledged is)."""

    __slots__ = ("_credited", "_handed", "_limit")

    def __init__(self, limit: AdaptiveLimit) -> None:
        self._limit = limit
        self._handed = 0
        self._credited = 0

    def handed(self, n: int) -> None:
        self._handed += n
        due = self._handed - SEND_SLACK - self._credited
        if due > 0:
            self._credited += due
            self._limit.moved(due)

    def delivered(self) -> None:
        rest = self._handed - self._credited
        self._credited = self._handed
        if rest > 0:
            self._limit.moved(rest)
