"""One bounded retry loop for API calls and signed-URL transfers.

Why not ``stamina``: the policy needs a per-reason cap (HTTP 500 gets fewer attempts than a 503),
a ``Retry-After`` that raises the exponential wait rather than replacing it, and a total-time
bound that refuses a wait which would end past the deadline. Stamina can express each of these
only through a stateful hook, and its global instrumentation would log every retry a second time
under a generic name; a twenty-line loop says it all plainly.

The loop asks a classifier about each failure: ``None`` means "not worth retrying, raise it",
a :class:`Retryable` names the reason (used as the metrics label) and any server-requested wait.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import structlog

from rfbatch.http.policy import RetryPolicy
from rfbatch.redact import redact_text

T = TypeVar("T")


@dataclass(frozen=True)
class Retryable:
    """A failure worth another attempt.

    ``reason`` is a short label ("429", "503", "timeout", "connection", "expired", ...).
    ``max_attempts`` caps how many attempts may fail for this reason (``None``: only the policy).
    """

    reason: str
    retry_after: float | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class RetryEvent:
    """Reported to hooks just before the loop sleeps; ``attempt`` is the one that failed."""

    operation: str
    attempt: int
    reason: str
    wait: float
    error: str


RetryHook = Callable[[RetryEvent], None]
Classifier = Callable[[BaseException], Retryable | None]


class Retrier:
    """Runs an async callable until it succeeds, the classifier says stop, or a bound is hit."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        log_event: str,
        hooks: Iterable[RetryHook] = (),
        secrets: Iterable[str] = (),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.log_event = log_event
        self._hooks = list(hooks)
        self._secrets = tuple(s for s in secrets if s)
        self._rng = rng or random.Random()
        self._clock = clock
        self._log: Any = structlog.get_logger("rfbatch.retry")
        self.counts: Counter[str] = Counter()

    def add_hook(self, hook: RetryHook) -> None:
        self._hooks.append(hook)

    def wait_for(self, attempt: int, retry_after: float | None) -> float:
        """Backoff before the retry that follows failed ``attempt`` (1-based)."""
        p = self.policy
        try:
            base = p.wait_initial * 2.0 ** (attempt - 1)
        except OverflowError:
            base = p.wait_max
        jitter = self._rng.uniform(0, p.wait_jitter) if p.wait_jitter else 0.0
        wait = min(p.wait_max, base + jitter)
        # The server knows its own load: never come back sooner than it asked.
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    async def call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        classify: Classifier,
    ) -> T:
        started = self._clock()
        per_reason: Counter[str] = Counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except Exception as exc:
                verdict = classify(exc)
                if verdict is None:
                    raise
                per_reason[verdict.reason] += 1
                if attempt >= self.policy.attempts:
                    raise
                if verdict.max_attempts is not None and (
                    per_reason[verdict.reason] >= verdict.max_attempts
                ):
                    raise
                wait = self.wait_for(attempt, verdict.retry_after)
                if self._clock() - started + wait > self.policy.timeout:
                    raise
                self._report(operation, attempt, verdict.reason, wait, exc)
            await anyio.sleep(wait)

    def _report(
        self, operation: str, attempt: int, reason: str, wait: float, exc: BaseException
    ) -> None:
        self.counts[reason] += 1
        error = redact_text(f"{type(exc).__name__}: {exc}", *self._secrets)
        self._log.warning(
            self.log_event,
            endpoint=operation,
            attempt=attempt,
            reason=reason,
            wait=round(wait, 3),
            error=error,
        )
        event = RetryEvent(
            operation=operation, attempt=attempt, reason=reason, wait=wait, error=error
        )
        for hook in self._hooks:
            hook(event)
