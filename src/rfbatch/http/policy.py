"""How hard a failing HTTP call is retried: one policy for API calls and transfers alike."""

from __future__ import annotations

from dataclasses import dataclass

from rfbatch.errors import ConfigError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing call is retried: bounded both by ``attempts`` and by ``timeout`` seconds.

    The wait before retry ``n`` is ``min(wait_max, wait_initial * 2**(n-1) + U(0, wait_jitter))``,
    raised to the server's ``Retry-After`` when it asked for longer. A wait that would end past
    ``timeout`` (counted from the first attempt) is not taken: the last error is raised instead.
    ``server_error_attempts`` caps how many attempts may end in HTTP 500, because a 500 usually
    means the request itself upsets the server, and hammering it rarely helps.
    """

    attempts: int = 6
    timeout: float = 120.0
    wait_initial: float = 0.25
    wait_max: float = 15.0
    wait_jitter: float = 1.0
    server_error_attempts: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.server_error_attempts < 1:
            raise ConfigError(
                f"retry server_error_attempts must be >= 1, got {self.server_error_attempts}"
            )
        for name in ("timeout", "wait_initial", "wait_max", "wait_jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"retry {name} must be >= 0, got {getattr(self, name)}")
