"""The webhook receiver: authorization, body caps, malformed payloads, redeliveries, waking."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.errors import ConfigError
from rfbatch.pipeline.jobs import job_spec_from, start_job
from rfbatch.settings import JobSettings
from rfbatch.state.manifest import SqliteManifest
from rfbatch.webhooks import InMemoryEvents, WebhookReceiver, serve_webhooks
from tests.conftest import API_KEY, WORKSPACE
from tests.jobs.support import (
    WEBHOOK_BEARER,
    client_for,
    image_batch,
    new_event_id,
    put_shard,
)
from tests.tars import tar_of
from tests.waiting import wait_for

CAP = 4096
SECRET = "Bearer rf_super-secret-publishable"


class CountingEvents:
    """The manifest's record_event, with a count of how often it was asked."""

    def __init__(self, manifest: SqliteManifest) -> None:
        self.manifest = manifest
        self.calls: list[str] = []

    async def __call__(self, event_id: str) -> bool:
        self.calls.append(event_id)
        return await self.manifest.record_event(event_id)


@dataclass
class Hook:
    url: str
    receiver: WebhookReceiver
    events: CountingEvents
    session: aiohttp.ClientSession

    async def post(
        self, body: Any, authorization: str | None = SECRET, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {} if authorization is None else {"Authorization": authorization}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url, data=data, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def hook(tmp_path: Path) -> AsyncIterator[Hook]:
    manifest = await SqliteManifest.open(tmp_path / "state")
    events = CountingEvents(manifest)
    receiver = WebhookReceiver(SECRET, CAP, events)
    try:
        async with (
            serve_webhooks(receiver, "127.0.0.1", 0) as url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        ):
            yield Hook(url, receiver, events, session)
    finally:
        await manifest.close()


def job_payload(job_id: str = "job-1", state: str = "success", **extra: Any) -> dict[str, Any]:
    return {
        "type": "roboflow-batch-job-notification-v1",
        "event_id": new_event_id(),
        "job_id": job_id,
        "job_state": state,
        "delivery_attempt": 1,
        **extra,
    }


async def test_a_missing_or_wrong_authorization_is_401(hook: Hook) -> None:
    payload = job_payload()
    assert (await hook.post(payload, authorization=None))[0] == 401
    assert (await hook.post(payload, authorization="Bearer rf_wrong"))[0] == 401
    assert (await hook.post(payload, authorization=SECRET + "x"))[0] == 401
    assert (await hook.post(payload, authorization=""))[0] == 401
    stats = hook.receiver.statistics()
    assert stats.rejected == {"missing_authorization": 2, "bad_authorization": 2}
    assert stats.accepted == 0
    assert hook.events.calls == []
    assert stats.jobs_kept == 0


async def test_both_wordings_of_the_publishable_key_are_accepted(hook: Hook) -> None:
    bare = SECRET.removeprefix("Bearer ")
    assert (await hook.post(job_payload("a"), authorization=SECRET))[0] == 200
    assert (await hook.post(job_payload("b"), authorization=bare))[0] == 200
    assert hook.receiver.statistics().accepted == 2


async def test_an_oversized_body_is_413_by_length_and_by_what_is_read(hook: Hook) -> None:
    big = job_payload(padding="x" * (CAP * 2))
    status, body = await hook.post(big)
    assert (status, body) == (413, {"error": "too_large"})

    # No Content-Length at all (chunked): the cap must hold on the bytes actually read.
    raw = json.dumps(big).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]

    status, _ = await _post_stream(hook, chunks())
    assert status == 413
    assert hook.receiver.statistics().rejected == {"too_large": 2}
    assert hook.events.calls == []


async def _post_stream(hook: Hook, stream: AsyncIterator[bytes]) -> tuple[int, Any]:
    async with hook.session.post(hook.url, data=stream, headers={"Authorization": SECRET}) as resp:
        assert resp.request_info.headers.get("Content-Length") is None
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps({"type": "roboflow-batch-job-notification-v1", "job_id": "j"}).encode(),
        json.dumps({"event_id": "e-1", "job_id": "j"}).encode(),
        json.dumps({"type": "roboflow-batch-job-notification-v1", "event_id": "e-2"}).encode(),
        json.dumps(
            {"type": "roboflow-data-staging-notification-v1", "event_id": "e-3", "batch_id": "b"}
        ).encode(),
        json.dumps({"type": "roboflow-batch-job-notification-v1", "event_id": "e" * 500}).encode(),
        b"[" * 1900 + b"]" * 1900,  # nested past the parser's recursion limit, within the cap
    ],
)
async def test_a_malformed_payload_is_400_and_not_recorded(hook: Hook, body: bytes) -> None:
    status, reply = await hook.post(body)
    assert (status, reply) == (400, {"error": "malformed"})
    assert hook.events.calls == []


async def test_a_redelivered_event_is_a_no_op(hook: Hook) -> None:
    payload = job_payload("job-7")
    waker = hook.receiver.job_waker("job-7")
    with capture_logs() as logs:
        assert (await hook.post(payload))[0] == 200
        assert await waker.wait_for(30)
        again = {**payload, "delivery_attempt": 2, "job_state": "fail"}
        status, reply = await hook.post(again)
    assert (status, reply) == (200, {"status": "duplicate"})
    assert hook.events.calls == [payload["event_id"], payload["event_id"]]
    # Only the first delivery was acted on.
    taken = [(e["event"], e.get("job_state"), e.get("attempt")) for e in logs]
    assert taken == [("webhook.job", "success", 1), ("webhook.duplicate", None, None)]
    # The duplicate woke nobody: a waiter finds nothing new.
    assert not waker.pending
    stats = hook.receiver.statistics()
    assert (stats.received, stats.accepted, stats.duplicates) == (2, 1, 1)
    # The event id is in the manifest: a new receiver on the same state refuses it too.
    assert await hook.events.manifest.record_event(payload["event_id"]) is False


async def test_an_unknown_notification_type_is_accepted_and_ignored(hook: Hook) -> None:
    status, _ = await hook.post({"type": "something-new-v2", "event_id": new_event_id()})
    assert status == 200
    stats = hook.receiver.statistics()
    assert (stats.accepted, stats.ignored) == (1, 1)


async def test_a_notification_that_raced_ahead_of_its_waiter_still_wakes_it(hook: Hook) -> None:
    assert (await hook.post(job_payload("early"))) == (200, {"status": "ok"})
    assert await hook.receiver.job_waker("early").wait_for(30)
    # Each waiter has its own waker, so two followers of one job are both woken.
    first, second = hook.receiver.job_waker("late"), hook.receiver.job_waker("late")
    woken: list[str] = []
    async with anyio.create_task_group() as tg:

        async def wait(name: str, waker: Any) -> None:
            await waker.wait()
            woken.append(name)

        tg.start_soon(wait, "first", first)
        tg.start_soon(wait, "second", second)
        await anyio.sleep(0.01)
        assert (await hook.post(job_payload("late")))[0] == 200
    assert sorted(woken) == ["first", "second"]
    assert not await hook.receiver.job_waker("never").wait_for(0.01)


async def test_the_authorization_value_is_never_logged(hook: Hook) -> None:
    with capture_logs() as logs:
        await hook.post(job_payload(), authorization=SECRET)
        await hook.post(job_payload(), authorization="Bearer rf_guess-" + SECRET)
        await hook.post(b"{bad", authorization=SECRET)
    assert {entry["event"] for entry in logs} >= {"webhook.job", "webhook.rejected"}
    assert "super-secret" not in repr(logs)
    assert "super-secret" not in repr(hook.receiver)


async def test_ingest_notifications_are_collected_per_batch(tmp_path: Path) -> None:
    # Images over 1 KiB fail ingest in this emulator, so the files-status lists a failed file.
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, max_image_bytes=1024)
    receiver = WebhookReceiver(WEBHOOK_BEARER, 64 * 1024, InMemoryEvents())
    async with (
        running_emulator(config) as emu,
        client_for(emu, tmp_path) as (settings, client),
        serve_webhooks(receiver, "127.0.0.1", 0) as url,
    ):
        waker = receiver.ingest_waker("shards")
        members = {"small.png": b"p" * 100, "large.png": b"L" * 5000}
        tar = tar_of(members, {"ingestId": "ing-1", "notificationsURL": url})
        await put_shard(settings, client, "shards", tar)
        assert await waker.wait_for(30)
        await wait_for(
            lambda: receiver.ingest_report("shards").status_notices == 1,
            'receiver.ingest_report("shards").status_notices == 1',
        )
        await wait_for(
            lambda: receiver.ingest_report("shards").failed_files != (),
            'receiver.ingest_report("shards").failed_files != ()',
        )
    report = receiver.ingest_report("shards")
    assert report.ingest_ids == ("ing-1",)
    assert report.ingested_files == 1
    assert [f.file_name for f in report.failed_files] == ["large.png"]
    assert report.failed_files[0].reason
    assert report.success is not None
    assert receiver.ingest_report("other").status_notices == 0


async def test_ingest_status_failure_is_reported(hook: Hook) -> None:
    base = {"type": "roboflow-data-staging-notification-v1", "batch_id": "refs", "shard_id": None}
    ok = {"type": "ingest-status-notification-v1", "success": True}
    bad = {
        "type": "ingest-status-notification-v1",
        "success": False,
        "error_details": {"type": "unsafe-url-detected", "reason": "untrusted host"},
    }
    for notification in (ok, bad):
        body = {**base, "event_id": new_event_id(), "ingest_id": "i", "notification": notification}
        assert (await hook.post(body))[0] == 200
    assert await hook.receiver.ingest_waker("refs").wait_for(30)
    report = hook.receiver.ingest_report("refs")
    assert (report.success, report.status_notices) == (False, 2)
    assert report.errors == ("unsafe-url-detected: untrusted host",)


async def test_emulator_job_webhooks_reach_the_receiver(emulator: Emulator, tmp_path: Path) -> None:
    receiver = WebhookReceiver(WEBHOOK_BEARER, 64 * 1024, InMemoryEvents())
    async with (
        client_for(emulator, tmp_path) as (_, client),
        serve_webhooks(receiver, "127.0.0.1", 0) as url,
    ):
        await image_batch(client, "imgs", count=1)
        spec = job_spec_from(
            JobSettings(workflow_id="wf"), batch_id="imgs", kind="images", notifications_url=url
        )
        waker = receiver.job_waker("hook-job")
        with capture_logs() as logs:
            await start_job(client, "hook-job", spec)
            assert await waker.wait_for(30)
    [notice] = [e for e in logs if e["event"] == "webhook.job"]
    assert (notice["job"], notice["job_state"], notice["attempt"]) == ("hook-job", "success", 1)


async def test_a_body_that_never_arrives_is_dropped_after_the_read_timeout() -> None:
    receiver = WebhookReceiver(SECRET, CAP, InMemoryEvents(), read_timeout=0.2)
    async with serve_webhooks(receiver, "127.0.0.1", 0) as url:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        head = (
            "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {SECRET}\r\nContent-Length: 500\r\n\r\n"
        )
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(head.encode() + b'{"event_id": "e-1", ')
            with anyio.fail_after(30):
                reply = await stream.receive()
    assert reply.startswith(b"HTTP/1.1 408")
    stats = receiver.statistics()
    assert stats.rejected == {"slow_body": 1}
    assert stats.accepted == 0


async def test_an_address_in_use_is_a_config_error() -> None:
    receiver = WebhookReceiver(SECRET, CAP, InMemoryEvents())
    async with serve_webhooks(receiver, "127.0.0.1", 0) as url:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            async with serve_webhooks(receiver, "127.0.0.1", port):
                pass


async def test_a_cancelled_server_still_closes_its_port_and_connections() -> None:
    # The daemon's task group cancelled (a signal, a failing stage) while the receiver serves:
    # its cleanup still runs to the end, so the port can be bound again and a client's idle
    # keep-alive connection is closed, not left open for ever.
    receiver = WebhookReceiver(SECRET, CAP, InMemoryEvents())
    with anyio.CancelScope() as scope:
        async with serve_webhooks(receiver, "127.0.0.1", 0) as url:
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            client = await anyio.connect_tcp("127.0.0.1", port)
            await client.send(b"GET /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with anyio.fail_after(30):
                assert (await read_response(client)).startswith(b"HTTP/1.1 405")
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation lands here
    assert scope.cancelled_caught
    async with client:
        with anyio.fail_after(30):
            await until_closed(client)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


async def read_response(stream: anyio.abc.ByteStream) -> bytes:
    """One whole HTTP response (its body sized by Content-Length) from ``stream``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive()
    return data


async def until_closed(stream: anyio.abc.ByteStream) -> None:
    """Return once the peer has closed ``stream`` (nothing more is sent on it here)."""
    try:
        while True:
            await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


async def test_notices_after_forgetting_are_taken_but_not_kept(hook: Hook) -> None:
    receiver = hook.receiver
    ingest = {
        "type": "roboflow-data-staging-notification-v1",
        "batch_id": "done-batch",
        "ingest_id": "i",
        "shard_id": None,
        "notification": {"type": "ingest-status-notification-v1", "success": True},
    }
    assert (await hook.post({**ingest, "event_id": new_event_id()}))[0] == 200
    assert receiver.statistics().batches_kept == 1
    receiver.forget_batch("done-batch")
    receiver.forget_job("done-job")

    late = [{**ingest, "event_id": new_event_id()}, job_payload("done-job")]
    assert [(await hook.post(body))[0] for body in late] == [200, 200]

    stats = receiver.statistics()
    assert (stats.batches_kept, stats.jobs_kept, stats.accepted) == (0, 0, 3)
    # Waited on again, a batch's notices count again.
    waker = receiver.ingest_waker("done-batch")
    assert (await hook.post({**ingest, "event_id": new_event_id()}))[0] == 200
    assert await waker.wait_for(30)
    assert receiver.ingest_report("done-batch").status_notices == 1


async def test_notices_for_ids_nobody_waits_on_are_kept_up_to_a_cap() -> None:
    # Jobs started elsewhere with this receiver's URL, batches nobody confirms: a daemon that
    # runs for months must not keep a notice of each for ever.
    receiver = WebhookReceiver(SECRET, CAP, InMemoryEvents(), unclaimed_kept=50)
    mine, my_batch = receiver.job_waker("mine"), receiver.ingest_waker("my-batch")
    async with (
        serve_webhooks(receiver, "127.0.0.1", 0) as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):

        async def post(body: dict[str, Any]) -> int:
            headers = {"Authorization": SECRET}
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                return resp.status

        for n in range(200):
            assert await post(job_payload(f"elsewhere-{n}")) == 200
            assert await post(ingest_payload(f"unconfirmed-{n}")) == 200
            stats = receiver.statistics()
            assert stats.jobs_kept <= 51
            assert stats.batches_kept <= 51
        assert (stats.jobs_kept, stats.batches_kept) == (51, 51)
        # What is waited on is never dropped: its notices still wake it.
        assert await post(job_payload("mine")) == 200
        assert await post(ingest_payload("my-batch")) == 200
        assert await mine.wait_for(30)
        assert await my_batch.wait_for(30)
    # The latest of the others are kept, for a waiter that comes after its notice; the
    # oldest are gone.
    assert receiver.job_waker("elsewhere-199").pending
    assert not receiver.job_waker("elsewhere-0").pending
    assert receiver.ingest_report("unconfirmed-199").status_notices == 1
    assert receiver.ingest_report("unconfirmed-0").status_notices == 0


def ingest_payload(batch_id: str) -> dict[str, Any]:
    return {
        "type": "roboflow-data-staging-notification-v1",
        "event_id": new_event_id(),
        "batch_id": batch_id,
        "ingest_id": "i",
        "shard_id": None,
        "notification": {"type": "ingest-status-notification-v1", "success": True},
    }
