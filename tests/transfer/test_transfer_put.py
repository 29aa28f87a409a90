"""Signed-URL PUTs: exact headers, streamed bodies, refresh on expiry, bounded retries."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from rfbatch.api import RetryEvent, RoboflowClient
from rfbatch.api.schemas import SignedUrl
from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.errors import ConfigError, FileChangedError, SignedUrlRejectedError, TransferError
from rfbatch.localfs.file_body import FileBody
from rfbatch.transfer import BytesBody, Transfer, TransferConfig
from tests.api.stub import stub_server
from tests.api.support import FAST_RETRY, image_bytes
from tests.tars import tar_of
from tests.waiting import wait_for

SIGNATURE = "c2lnbmF0dXJlLXNlY3JldA"


def signed_for(base_url: str, headers: dict[str, str] | None = None) -> SignedUrl:
    return SignedUrl(
        upload_url=f"{base_url}/bucket/obj%2Fname.tar?X-Goog-Signature={SIGNATURE}&X-Goog-Date=1",
        extension_headers=headers if headers is not None else {"x-goog-meta-a": "1"},
    )


def item(emulator: Emulator, batch_id: str, name: str) -> dict[str, object]:
    items = emulator.state()["batches"][batch_id]["items"]
    return next(i for i in items if i["name"] == name)


async def test_put_sends_exactly_the_extension_headers_and_content_length() -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    data = os.urandom(3 * 1024 * 1024 + 17)
    headers = {"x-goog-content-length-range": "0,9999999999", "X-Custom-Thing": "Keep Case"}
    async with stub_server(ok) as stub, Transfer() as transfer:
        sent = await transfer.put(signed_for(stub.base_url, headers), BytesBody(data))
    assert sent == len(data)
    (request,) = stub.requests
    assert request.method == "PUT"
    # The URL went out exactly as given: no re-encoding of %2F, query untouched.
    assert request.raw_path == f"/bucket/obj%2Fname.tar?X-Goog-Signature={SIGNATURE}&X-Goog-Date=1"
    assert request.query == {"X-Goog-Signature": SIGNATURE, "X-Goog-Date": "1"}
    assert request.body == data
    got = {k.lower(): v for k, v in request.headers.items()}
    assert set(got) == {"host", "content-length", *(k.lower() for k in headers)}
    assert got["content-length"] == str(len(data))
    assert got["x-custom-thing"] == "Keep Case"


async def test_video_file_put_to_the_emulator_arrives_intact(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    data = os.urandom(2 * 1024 * 1024 + 5)
    path.write_bytes(data)
    counted: list[int] = []
    signed = await client.video_upload_url("put-v", "clip.mp4")
    body = FileBody(path, 256 * 1024, size=len(data), mtime_ns=path.stat().st_mtime_ns)
    assert await transfer.put(signed, body, on_bytes=counted.append) == len(data)
    assert sum(counted) == len(data)
    stored = item(emulator, "put-v", "clip.mp4")
    assert stored["size"] == len(data)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["received"] == 1
    assert transfer.statistics().bytes_sent == len(data)
    assert transfer.statistics().puts == 1


async def test_tar_shard_put_is_ingested(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator
) -> None:
    files = [(f"p{i}.jpg", image_bytes(f"p{i}")) for i in range(5)]
    signed = await client.shard_upload_url("put-shards")
    await transfer.put(signed, BytesBody(tar_of(files), chunk_size=1000))

    async def ingested() -> bool:
        return await client.count("put-shards") == 5

    await wait_for(ingested, "shard ingested")
    assert emulator.state()["counters"]["puts"] == 1


async def test_expired_url_is_refreshed_and_the_put_retried(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator
) -> None:
    data = image_bytes("video", 50_000)
    first = await client.video_upload_url("put-exp", "e.mp4")
    emulator.expire_urls()
    refreshed: list[SignedUrl] = []

    async def refresh() -> SignedUrl:
        fresh = await client.video_upload_url("put-exp", "e.mp4")
        refreshed.append(fresh)
        return fresh

    events: list[RetryEvent] = []
    transfer.add_retry_hook(events.append)
    assert await transfer.put(first, BytesBody(data), refresh=refresh) == len(data)
    assert len(refreshed) == 1
    assert refreshed[0].upload_url != first.upload_url
    assert [e.reason for e in events] == ["expired"]
    stored = item(emulator, "put-exp", "e.mp4")
    assert (stored["size"], stored["received"]) == (len(data), 1)
    assert emulator.state()["counters"]["putsRejected"] >= 1


async def test_refused_url_without_refresh_raises_rejected(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator
) -> None:
    signed = await client.video_upload_url("put-rej", "r.mp4")
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(expire=1.0)}))
    with pytest.raises(SignedUrlRejectedError) as info:
        await transfer.put(signed, BytesBody(b"abc"))
    assert "403" in str(info.value)
    assert "signature=***" in str(info.value)


async def test_refreshes_are_bounded() -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="<Error><Code>SignatureDoesNotMatch</Code></Error>")

    calls = 0
    async with stub_server(refuse) as stub:
        signed = signed_for(stub.base_url)

        async def refresh() -> SignedUrl:
            nonlocal calls
            calls += 1
            return signed

        config = TransferConfig(retry=FAST_RETRY, refresh_attempts=2)
        async with Transfer(config) as transfer:
            with pytest.raises(SignedUrlRejectedError, match="SignatureDoesNotMatch"):
                await transfer.put(signed, BytesBody(b"x" * 10), refresh=refresh)
    assert calls == 2
    assert len(stub.requests) == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rates", "reason"),
    [({"reset": 1.0}, "connection"), ({"status_503": 1.0}, "503"), ({"status_500": 1.0}, "500")],
)
async def test_transient_put_failures_are_retried_and_the_file_arrives_once(
    client: RoboflowClient,
    transfer: Transfer,
    emulator: Emulator,
    rates: dict[str, float],
    reason: str,
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    signed = await client.video_upload_url("put-tr", "t.mp4")
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(**rates)}, retry_after=0))
    events: list[RetryEvent] = []

    def heal(event: RetryEvent) -> None:
        events.append(event)
        emulator.set_faults(None)

    transfer.add_retry_hook(heal)
    with capture_logs() as logs:
        assert await transfer.put(signed, BytesBody(data)) == len(data)
    assert [e.reason for e in events] == [reason]
    stored = item(emulator, "put-tr", "t.mp4")
    assert (stored["size"], stored["received"]) == (len(data), 1)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert any(e["event"] == "transfer.retry" and e["reason"] == reason for e in logs)


async def test_transient_put_failures_give_up_after_the_attempts() -> None:
    async def busy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="busy", headers={"Retry-After": "0"})

    async with stub_server(busy) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as transfer:
        with pytest.raises(TransferError, match="503") as info:
            await transfer.put(signed_for(stub.base_url), BytesBody(b"abc"))
    assert len(stub.requests) == FAST_RETRY.attempts
    assert SIGNATURE not in str(info.value)
    assert transfer.statistics().retries == {"503": FAST_RETRY.attempts - 1}


async def test_other_client_errors_are_not_retried() -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        return web.Response(status=400, text="MalformedSecurityHeader")

    async with stub_server(bad) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as transfer:
        with pytest.raises(TransferError, match="MalformedSecurityHeader"):
            await transfer.put(signed_for(stub.base_url), BytesBody(b"abc"))
    assert len(stub.requests) == 1


async def test_a_file_changed_during_the_put_is_not_retried(tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    path = tmp_path / "moving.mp4"
    path.write_bytes(b"a" * 4096)
    body = FileBody(path, 1024, size=4096, mtime_ns=path.stat().st_mtime_ns)
    path.write_bytes(b"b" * 5000)  # the file moved on before the PUT began
    async with stub_server(ok) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as transfer:
        with pytest.raises(FileChangedError):
            await transfer.put(signed_for(stub.base_url), body)
    assert transfer.statistics().retries == {}
    assert transfer.statistics().puts == 0


async def test_transfer_outside_its_context_and_bad_ca_bundle(tmp_path: Path) -> None:
    transfer = Transfer()
    with pytest.raises(RuntimeError, match="async with"):
        await transfer.put(signed_for("http://127.0.0.1:9"), BytesBody(b"x"))
    with pytest.raises(ConfigError, match="ca_bundle"):
        async with Transfer(TransferConfig(ca_bundle=tmp_path / "missing.pem")):
            pass
