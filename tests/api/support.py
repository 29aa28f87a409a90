"""Helpers shared by the API and transfer tests: fast retry settings, fake media, polling."""

from __future__ import annotations

from typing import TypeVar

from rfbatch.api import ClientConfig, RetryPolicy

T = TypeVar("T")

# Retries in tests are near-instant, bounded and few.
FAST_RETRY = RetryPolicy(
    attempts=4,
    timeout=20.0,
    wait_initial=0.001,
    wait_max=0.01,
    wait_jitter=0.001,
    server_error_attempts=2,
)


def client_config(base_url: str, api_key: str, **overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "api_key": api_key,
        "base_url": base_url,
        "retry": FAST_RETRY,
        "connect_timeout": 5.0,
        "read_timeout": 20.0,
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


def image_bytes(name: str, size: int = 300) -> bytes:
    """Deterministic bytes that differ per name (the emulator does not decode images)."""
    seed = name.encode()
    return (seed * (size // max(1, len(seed)) + 1))[:size]
