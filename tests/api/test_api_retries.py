"""Retries under injected faults: bounded by attempts and time, honouring Retry-After."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from rfbatch.api import RetryEvent, RetryPolicy, RoboflowClient
from rfbatch.app import client_config as client_config_from
from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.errors import ApiUnreachableError, FatalError, TransientError
from rfbatch.settings import load_settings
from tests.api.stub import stub_server
from tests.api.support import FAST_RETRY, client_config


def faults(route: str, **rates: float) -> FaultProfile:
    return FaultProfile(routes={route: FaultRates(**rates)}, retry_after=0, seed=7)


async def retrying_client(
    emulator: Emulator, events: list[RetryEvent], **overrides: object
) -> RoboflowClient:
    client = RoboflowClient(
        client_config(emulator.base_url, emulator.config.api_key, **overrides),
        on_retry=events.append,
    )
    return await client.__aenter__()


def heal_after(
    emulator: Emulator, failures: int, events: list[RetryEvent]
) -> Callable[[RetryEvent], None]:
    """A retry hook that records events and heals the emulator after ``failures`` retries."""

    def hook(event: RetryEvent) -> None:
        events.append(event)
        if len(events) >= failures:
            emulator.set_faults(None)

    return hook


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rates", "reason"),
    [
        ({"status_429": 1.0}, "429"),
        ({"status_503": 1.0}, "503"),
        ({"status_502": 1.0}, "502"),
        ({"status_504": 1.0}, "504"),
        ({"status_408": 1.0}, "408"),
        ({"reset": 1.0}, "connection"),
        ({"truncate": 1.0}, "connection"),
    ],
)
async def test_transient_faults_are_retried_then_succeed(
    emulator: Emulator, rates: dict[str, float], reason: str
) -> None:
    events: list[RetryEvent] = []
    config = client_config(emulator.base_url, emulator.config.api_key)
    async with RoboflowClient(config) as client:
        await client.upload_image("retry-b", "a.jpg", b"abc")
        client.add_retry_hook(heal_after(emulator, 2, events))
        emulator.set_faults(faults("count", **rates))
        with capture_logs() as logs:
            assert await client.count("retry-b") == 1
    assert [(e.operation, e.attempt, e.reason) for e in events] == [
        ("count", 1, reason),
        ("count", 2, reason),
    ]
    assert client.retry_counts == {reason: 2}
    retry_logs = [entry for entry in logs if entry["event"] == "api.retry"]
    assert [(e["endpoint"], e["attempt"], e["reason"]) for e in retry_logs] == [
        ("count", 1, reason),
        ("count", 2, reason),
    ]
    assert all(e["log_level"] == "warning" and "wait" in e for e in retry_logs)


async def count_failing_always(
    emulator: Emulator, events: list[RetryEvent], **rates: float
) -> TransientError:
    """The error a count ends with when every count request fails at ``rates``."""
    client = await retrying_client(emulator, events)
    try:
        await client.workspace()
        emulator.set_faults(faults("count", **rates))
        with pytest.raises(TransientError) as info:
            await client.count("any-batch")
    finally:
        await client.aclose()
    return info.value


async def test_an_api_call_that_ends_in_500_is_not_sent_again(emulator: Emulator) -> None:
    # As the official client: a 500 says the request upset the service (server_error_attempts
    # in the policy caps storage transfers only).
    events: list[RetryEvent] = []
    error = await count_failing_always(emulator, events, status_500=1.0)
    assert error.status == 500
    assert events == []
    assert emulator.state()["counters"]["faultsInjected"] == 1


async def test_transient_failures_exhaust_the_attempts(emulator: Emulator) -> None:
    events: list[RetryEvent] = []
    error = await count_failing_always(emulator, events, status_503=1.0)
    assert error.status == 503
    assert len(events) == FAST_RETRY.attempts - 1
    assert emulator.state()["counters"]["faultsInjected"] == FAST_RETRY.attempts


async def test_retry_after_beyond_the_time_budget_gives_up_at_once(emulator: Emulator) -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(attempts=5, timeout=0.5, wait_initial=0.001, wait_max=0.01)
    client = await retrying_client(emulator, events, retry=policy)
    try:
        await client.workspace()
        emulator.set_faults(
            FaultProfile(routes={"count": FaultRates(status_429=1.0)}, retry_after=30)
        )
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            await client.count("any-batch")
    finally:
        await client.aclose()
    assert info.value.status == 429
    assert info.value.retry_after == 30.0
    assert events == []
    assert time.monotonic() - started < 10  # it did not sit out the 30 s


async def test_retry_after_is_honoured_even_above_wait_max() -> None:
    calls: list[float] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response({"workspace": "ws"})

    events: list[RetryEvent] = []
    async with stub_server(handle) as stub:
        config = client_config(stub.base_url, "k-123456")
        async with RoboflowClient(config, on_retry=events.append) as client:
            assert await client.workspace() == "ws"
    assert [e.reason for e in events] == ["429"]
    assert events[0].wait >= 0.2 > FAST_RETRY.wait_max
    assert calls[1] - calls[0] >= 0.19


async def test_read_timeout_is_transient_and_retried(emulator: Emulator) -> None:
    events: list[RetryEvent] = []
    client = RoboflowClient(
        client_config(emulator.base_url, emulator.config.api_key, read_timeout=0.2),
        on_retry=events.append,
    )
    async with client:
        await client.upload_image("slow-b", "a.jpg", b"a")
        emulator.set_faults(FaultProfile(routes={"count": FaultRates(slow=1.0)}, slow_seconds=1.0))
        client.add_retry_hook(lambda _: emulator.set_faults(None))
        # The first count hangs past the read timeout; the retry finds the emulator healed.
        assert await client.count("slow-b") == 1
    assert [e.reason for e in events] == ["timeout"]


async def test_connection_refused_is_transient_and_bounded() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now: every connect is refused.
    events: list[RetryEvent] = []
    async with RoboflowClient(
        client_config(f"http://127.0.0.1:{port}", "k-123456"), on_retry=events.append
    ) as client:
        with pytest.raises(TransientError) as info:
            await client.workspace()
    assert info.value.status is None
    assert "connection error" in str(info.value)
    assert [e.reason for e in events] == ["connection"] * (FAST_RETRY.attempts - 1)
    # No answer through every retry: the run cannot get past it (exit 3), the cause kept.
    assert isinstance(info.value, ApiUnreachableError)
    assert isinstance(info.value, FatalError)
    last_try = info.value.__cause__
    assert isinstance(last_try, TransientError)
    assert isinstance(last_try.__cause__, OSError)


async def test_concurrency_cap_holds() -> None:
    in_flight = 0
    peak = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        if request.path == "/":
            return web.json_response({"workspace": "ws"})
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await anyio.sleep(0.02)
        finally:
            in_flight -= 1
        return web.json_response({"count": 1})

    async with stub_server(handle) as stub:
        config = client_config(stub.base_url, "k-123456", max_concurrent_requests=3)
        async with RoboflowClient(config) as client:
            await client.workspace()
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(client.count, "b")
    assert peak == 3


async def test_retry_settings_reach_the_client(emulator: Emulator, tmp_path: Path) -> None:
    # What a user writes in the config file is what the client does: no wait between attempts,
    # three attempts for a 503, a single one for a 500.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[api]\nretry_attempts = 3\nretry_wait_initial = 0\nretry_wait_max = 0\n"
        "retry_wait_jitter = 0\nretry_server_error_attempts = 1\n"
        f'base_url = "{emulator.base_url}"\nkey = "{emulator.config.api_key}"\n'
    )
    settings = load_settings(cfg)
    async with RoboflowClient(client_config_from(settings)) as client:
        await client.workspace()
        for status, requests in (("status_503", 3), ("status_500", 1)):
            before = emulator.state()["counters"]["faultsInjected"]
            emulator.set_faults(faults("count", **{status: 1.0}))
            with pytest.raises(TransientError):
                await client.count("any-batch")
            emulator.set_faults(None)
            assert emulator.state()["counters"]["faultsInjected"] - before == requests, status
