"""Helpers shared by the API and transfer tests: fast retry settings, fake media, polling."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

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


def tar_of(files: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``done`` says yes; generous deadline, tiny pauses."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await anyio.sleep(0.02)
