"""Downloads from signed URLs: streamed to disk, length-checked, retried from scratch."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from aiohttp import web

from rfbatch.api import RetryEvent, RoboflowClient
from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.errors import IncompleteBodyError, SignedUrlRejectedError, TransferError
from rfbatch.transfer import Transfer, TransferConfig
from tests.api.stub import stub_server
from tests.api.support import FAST_RETRY, image_bytes

SIGNATURE = "ZG93bmxvYWQtc2lnbmF0dXJl"


async def staged_file(client: RoboflowClient, batch_id: str, name: str, data: bytes) -> str:
    await client.upload_image(batch_id, name, data)
    (meta,) = [f async for f in client.list_files(batch_id) if f.file_name == name]
    return meta.download_url


async def test_download_is_byte_identical_and_counted(
    client: RoboflowClient, transfer: Transfer, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    url = await staged_file(client, "dl", "big.jpg", data)
    dest = tmp_path / "big.jpg.part"
    counted: list[int] = []
    assert await transfer.download(url, dest, len(data), on_bytes=counted.append) == len(data)
    assert dest.read_bytes() == data
    assert sum(counted) == len(data)
    stats = transfer.statistics()
    assert (stats.bytes_received, stats.downloads) == (len(data), 1)


async def test_a_small_body_is_kept_in_memory_and_a_large_one_goes_to_disk(
    client: RoboflowClient, tmp_path: Path
) -> None:
    small, large = os.urandom(1000), os.urandom(40_000)
    small_url = await staged_file(client, "keep", "small.jpg", small)
    large_url = await staged_file(client, "keep", "large.jpg", large)
    config = TransferConfig(retry=FAST_RETRY, write_chunk_size=16 * 1024)
    async with Transfer(config) as tx:
        assert await tx.download_or_keep(small_url, tmp_path / "s.part") == (len(small), small)
        assert await tx.download_or_keep(large_url, tmp_path / "l.part") == (len(large), None)
    assert not (tmp_path / "s.part").exists()  # kept: never created
    assert (tmp_path / "l.part").read_bytes() == large


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rates", "reason"),
    [
        ({"truncate": 1.0}, "truncated"),
        ({"reset": 1.0}, "truncated"),
        ({"status_503": 1.0}, "503"),
        ({"status_429": 1.0}, "429"),
    ],
)
async def test_broken_downloads_are_retried_from_scratch(
    client: RoboflowClient,
    transfer: Transfer,
    emulator: Emulator,
    tmp_path: Path,
    rates: dict[str, float],
    reason: str,
) -> None:
    data = image_bytes("whole", 200_000)
    url = await staged_file(client, "dl-tr", "w.jpg", data)
    emulator.set_faults(FaultProfile(routes={"download": FaultRates(**rates)}, retry_after=0))
    events: list[RetryEvent] = []

    def heal(event: RetryEvent) -> None:
        events.append(event)
        emulator.set_faults(None)

    transfer.add_retry_hook(heal)
    dest = tmp_path / "w.part"
    assert await transfer.download(url, dest, len(data)) == len(data)
    assert dest.read_bytes() == data
    assert [e.reason for e in events] == [reason]


async def test_truncated_every_time_gives_up_and_leaves_no_partial_file(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator, tmp_path: Path
) -> None:
    data = image_bytes("short", 10_000)
    url = await staged_file(client, "dl-short", "s.jpg", data)
    emulator.set_faults(FaultProfile(routes={"download": FaultRates(truncate=1.0)}))
    dest = tmp_path / "s.part"
    with pytest.raises(IncompleteBodyError):
        await transfer.download(url, dest)
    assert not dest.exists()
    assert transfer.statistics().retries == {"truncated": FAST_RETRY.attempts - 1}


async def test_refused_url_is_raised_at_once_for_a_fresh_listing(
    client: RoboflowClient, transfer: Transfer, emulator: Emulator, tmp_path: Path
) -> None:
    url = await staged_file(client, "dl-exp", "x.jpg", b"x" * 100)
    emulator.expire_urls()
    with pytest.raises(SignedUrlRejectedError):
        await transfer.download(url, tmp_path / "x.part")
    assert transfer.statistics().retries == {}
    assert not (tmp_path / "x.part").exists()
    # A fresh listing gives a URL that works.
    fresh = (await client.list_files("dl-exp").collect())[0].download_url
    assert await transfer.download(fresh, tmp_path / "x.part") == 100


async def test_length_other_than_expected_is_incomplete(
    client: RoboflowClient, transfer: Transfer, tmp_path: Path
) -> None:
    url = await staged_file(client, "dl-len", "l.jpg", b"y" * 500)
    with pytest.raises(IncompleteBodyError, match="expected 400"):
        await transfer.download(url, tmp_path / "l.part", expected_length=400)
    assert not (tmp_path / "l.part").exists()


async def test_stream_without_content_length_is_checked_against_expected(
    tmp_path: Path,
) -> None:
    payload = os.urandom(70_000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 8192):
            await response.write(payload[start : start + 8192])
        await response.write_eof()
        return response

    async with stub_server(chunked) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as tx:
        url = f"{stub.base_url}/o?X-Goog-Signature={SIGNATURE}"
        assert await tx.download(url, tmp_path / "ok.part", len(payload)) == len(payload)
        assert (tmp_path / "ok.part").read_bytes() == payload
        with pytest.raises(IncompleteBodyError, match="ran past"):
            await tx.download(url, tmp_path / "short.part", len(payload) - 1)
        with pytest.raises(IncompleteBodyError, match=f"of {len(payload) + 5}"):
            await tx.download(url, tmp_path / "long.part", len(payload) + 5)
    assert stub.requests[0].headers["Accept-Encoding"] == "identity"


async def test_gzip_objects_are_saved_as_stored(tmp_path: Path) -> None:
    raw = gzip.compress(b"results " * 1000)

    async def gz(request: web.Request) -> web.StreamResponse:
        return web.Response(body=raw, headers={"Content-Encoding": "gzip"})

    async with stub_server(gz) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as tx:
        got = await tx.download(f"{stub.base_url}/r.tar.gz", tmp_path / "r.part", len(raw))
    assert got == len(raw)
    assert (tmp_path / "r.part").read_bytes() == raw


async def test_not_found_is_not_retried(tmp_path: Path) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="NoSuchKey")

    async with stub_server(missing) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as tx:
        with pytest.raises(TransferError, match="NoSuchKey") as info:
            await tx.download(f"{stub.base_url}/o?X-Goog-Signature={SIGNATURE}", tmp_path / "m")
    assert len(stub.requests) == 1
    assert SIGNATURE not in str(info.value)


async def test_transient_download_failures_give_up_as_transfer_error(tmp_path: Path) -> None:
    async def busy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="bad gateway")

    async with stub_server(busy) as stub, Transfer(TransferConfig(retry=FAST_RETRY)) as tx:
        with pytest.raises(TransferError, match="502"):
            await tx.download(f"{stub.base_url}/o", tmp_path / "b.part")
    assert len(stub.requests) == FAST_RETRY.attempts
    assert not (tmp_path / "b.part").exists()
