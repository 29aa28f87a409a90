"""Tar shard ingest, its webhooks, digests mode, and reference (URL) ingests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.emulator.model import ShardVocabulary
from tests.emulator.support import Api, FileServer, Receiver
from tests.tars import tar_of
from tests.waiting import wait_for


@pytest.fixture
async def small_api(tmp_path: Path) -> AsyncIterator[Api]:
    """An emulator with a tiny image limit, a visible ingest delay and its own session."""
    config = EmulatorConfig(
        api_key="k",
        workspace="test-ws",
        state_dir=tmp_path / "state",
        max_image_bytes=1000,
        ingest_delay=0.05,
        vocabulary_seed=7,
    )
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        yield Api(emu, session)


def _tar_with_specials() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("good.jpg", b"g" * 100)
        add("./dot.png", b"d" * 10)
        add("../escape.jpg")
        add("/abs.jpg")
        add("sub/nested.jpg")
        add("link.jpg", kind=tarfile.SYMTYPE)
        add("dev.jpg", kind=tarfile.CHRTYPE)
        add("readme.txt", b"hello")
        add("huge.jpg", b"h" * 1001)
    return buf.getvalue()


async def test_tar_ingest_counts_images_and_records_failures(small_api: Api) -> None:
    api = small_api
    await api.upload_tar("t", {})  # an empty shard is fine
    details = await api.shard_url("t")
    assert await api.put(details, _tar_with_specials()) == 200
    await api.wait_count("t", 2)
    batch = api.emu.state()["batches"]["t"]
    assert sorted(i["name"] for i in batch["items"]) == ["dot.png", "good.jpg"]
    assert sorted((f["name"], f["reason"]) for f in batch["failedItems"]) == [
        ("../escape.jpg", "unsafe-path"),
        ("/abs.jpg", "unsafe-path"),
        ("dev.jpg", "unsupported-member-type"),
        ("huge.jpg", "file-size-limit-exceeded"),
        ("link.jpg", "unsupported-member-type"),
        ("readme.txt", "unsupported-file-type"),
        ("sub/nested.jpg", "nested-path"),
    ]
    shard = batch["shards"][-1]
    assert shard["objects"] == 2
    assert (shard["statusName"], shard["statusType"]) == ShardVocabulary.drawn(7).partial
    blobs = list((api.emu.config.state_dir or Path()).joinpath("blobs").iterdir())
    assert sorted(b.read_bytes() for b in blobs) == [b"d" * 10, b"g" * 100]


async def test_ingest_is_asynchronous_after_the_put(small_api: Api) -> None:
    api = small_api
    details = await api.shard_url("later")
    assert await api.put(details, tar_of({f"{n}.jpg": b"x" for n in range(4)})) == 200
    words = ShardVocabulary.drawn(7)
    # Like the real service plausibly, the batch is not there for reads until a shard is processed.
    for path in ("", "/count", "/shards", "/list"):
        assert (await api.get(api.ds(f"/batches/later{path}"))).status == 404
    assert api.emu.state()["batches"]["later"]["shards"][0]["statusName"] == words.received[0]
    await api.wait_count("later", 4)
    shards = (await api.get(api.ds("/batches/later/shards"))).body["shards"]
    assert (shards[0]["statusName"], shards[0]["statusType"]) == words.ingested
    assert shards[0].get("statusMetadata") in (None, {})  # no per-file figures
    assert shards[0]["shardObjectsCount"] == 4
    assert shards[0]["eventTimestamp"].endswith("Z")


async def test_notification_config_is_honoured_and_not_counted(
    api: Api, receiver: Receiver
) -> None:
    receiver.refuse_first = 1  # the first delivery fails: the emulator must retry
    members = {"a.jpg": b"a", "b.jpg": b"b"}
    config = {"ingestId": "ingest-42", "notificationsURL": receiver.url}
    await api.upload_tar("hooked", members, notification=config)
    await api.wait_count("hooked", 2)
    await wait_for(_has(receiver, 2), "two ingest webhooks")
    names = [i["name"] for i in api.emu.state()["batches"]["hooked"]["items"]]
    assert "notification_config.json" not in names
    [files] = [
        h for h in receiver.received if h.body["notification"]["type"].startswith("ingest-files")
    ]
    [status] = [
        h for h in receiver.received if h.body["notification"]["type"].startswith("ingest-status")
    ]
    shard_id = api.emu.state()["batches"]["hooked"]["shards"][0]["shardId"]
    assert files.body["type"] == "roboflow-data-staging-notification-v1"
    assert files.body["ingest_id"] == "ingest-42"
    assert files.body["batch_id"] == "hooked"
    assert files.body["shard_id"] == shard_id
    assert sorted(files.body["notification"]["ingested_files"]) == ["a.jpg", "b.jpg"]
    assert files.body["notification"]["failed_files"] == []
    assert files.body["notification"]["success"] is True
    assert status.body["shard_id"] is None
    assert status.body["notification"]["success"] is True
    for hook in receiver.received:
        assert hook.headers["Authorization"] == "Bearer rf_test-ws"
        assert hook.body["event_id"]
    attempts = sorted(h.body["delivery_attempt"] for h in receiver.received)
    assert attempts[-1] == 2  # one of the two was redelivered after the refused first call

    # The emulator counts a delivery once its answer is back, a moment after the receiver
    # has recorded it: wait for the count rather than race it.
    async def counted() -> bool:
        return bool(api.emu.state()["counters"]["webhooksSent"] == 2)

    await wait_for(counted, "both deliveries counted")


def _has(receiver: Receiver, n: int):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return len(receiver.received) >= n

    return probe


async def test_oversize_member_reported_in_files_status(small_api: Api, receiver: Receiver) -> None:
    api = small_api
    config = {"ingestId": "i", "notificationsURL": receiver.url}
    await api.upload_tar("fs", {"ok.jpg": b"o", "big.jpg": b"b" * 1001}, notification=config)
    await wait_for(_has(receiver, 2), "ingest webhooks")
    [files] = [h for h in receiver.received if h.body["shard_id"] is not None]
    note = files.body["notification"]
    assert note["ingested_files"] == ["ok.jpg"]
    assert note["failed_files"] == [
        {
            "type": "file-size-limit-exceeded",
            "file_name": "big.jpg",
            "reason": "file-size-limit-exceeded",
        }
    ]
    assert note["success"] is False
    assert api.emu.state()["batches"]["fs"]["failedItems"] == [
        {"name": "big.jpg", "reason": "file-size-limit-exceeded"}
    ]


async def test_corrupt_tar_fails_its_shard(api: Api) -> None:
    details = await api.shard_url("bad")
    assert await api.put(details, b"this is not a tar archive" * 100) == 200

    async def failed() -> bool:
        shards = api.emu.state()["batches"]["bad"]["shards"]
        return bool(shards) and shards[0]["statusType"] == "error"

    await wait_for(failed, "the shard to fail")
    assert await api.count("bad") == 0
    reply = await api.get(api.ds("/batches/bad/shards"))
    assert "invalid-archive" in reply.body["shards"][0]["statusMetadata"]["reason"]


async def test_large_shard_streams_and_round_trips(api: Api) -> None:
    members = {f"big-{n}.jpg": os.urandom(3 * 1024 * 1024 + n) for n in range(4)}
    await api.upload_tar("large", members)
    await api.wait_count("large", 4)
    for entry in await api.list_all("large"):
        assert await api.download(entry["downloadURL"]) == members[entry["fileName"]]


async def test_digests_mode_keeps_only_size_and_hash(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key="k", workspace="test-ws", state_dir=tmp_path, store="digests")
    data = os.urandom(200_000)
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        api = Api(emu, session)
        await api.upload_tar("dg", {"a.jpg": data})
        await api.wait_count("dg", 1)
        [item] = emu.state()["batches"]["dg"]["items"]
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["size"] == len(data)
        assert list((tmp_path / "blobs").iterdir()) == []
        [entry] = await api.list_all("dg")
        assert await api.download(entry["downloadURL"]) == bytes(len(data))


async def test_state_dir_none_uses_a_temporary_dir_removed_on_exit() -> None:
    async with running_emulator(EmulatorConfig(api_key="k", workspace="w")) as emu:
        core_dir = emu._core.state_dir
        assert core_dir.is_dir()
    assert not core_dir.exists()


# references ---------------------------------------------------------------------------------


@pytest.fixture
async def http_refs_api(tmp_path: Path) -> AsyncIterator[Api]:
    """An emulator that accepts the plain-HTTP loopback file server's reference URLs."""
    config = EmulatorConfig(
        api_key="k", workspace="test-ws", state_dir=tmp_path / "s", allow_http_references=True
    )
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        yield Api(emu, session)


async def test_http_reference_urls_are_refused_by_default(api: Api) -> None:
    for body in (
        {"imageReferences": [{"name": "a.jpg", "url": "http://127.0.0.1/a.jpg"}]},
        {"imageReferencesURL": "http://127.0.0.1/refs.jsonl"},
    ):
        reply = await api.post(api.ds("/batches/plain/bulk-upload/image-references"), body)
        assert reply.status == 400, body
        assert "https" in json.dumps(reply.body)


async def test_image_references_are_fetched_from_loopback(
    http_refs_api: Api, file_server: FileServer, receiver: Receiver
) -> None:
    api = http_refs_api
    file_server.files = {"one.jpg": b"1" * 50, "two.png": b"2" * 60}
    refs = [
        {"name": "one.jpg", "url": f"{file_server.url}/one.jpg"},
        {"name": "two.png", "url": f"{file_server.url}/two.png"},
        {"name": "far.jpg", "url": "https://example.com/far.jpg"},
        {"name": "gone.jpg", "url": f"{file_server.url}/gone.jpg"},
    ]
    body = {
        "imageReferences": refs,
        "ingestId": "refs-1",
        "notificationsURL": receiver.url,
        "notificationCategories": ["ingest-status", "files-status"],
    }
    reply = await api.post(api.ds("/batches/refs/bulk-upload/image-references"), body)
    assert reply.status == 200
    assert reply.body["ingestId"] == "refs-1"
    assert reply.body["duplicated"] is False
    assert len(reply.body["shardIds"]) == 1
    await api.wait_count("refs", 2)
    await wait_for(_has(receiver, 2), "references webhooks")
    batch = api.emu.state()["batches"]["refs"]
    assert batch["batchType"] == "sharded-batch"
    assert {f["name"]: f["reason"] for f in batch["failedItems"]} == {
        "far.jpg": "unsafe-url-detected",
        "gone.jpg": "file-download-failed",
    }
    for entry in await api.list_all("refs"):
        assert await api.download(entry["downloadURL"]) == file_server.files[entry["fileName"]]
    status = next(h for h in receiver.received if h.body["shard_id"] is None)
    assert status.body["notification"]["success"] is False
    assert status.body["notification"]["error_details"]["type"] == "unsafe-url-detected"
    again = await api.post(api.ds("/batches/refs/bulk-upload/image-references"), body)
    assert again.body["duplicated"] is True
    assert again.body["shardIds"] == reply.body["shardIds"]


async def test_references_file_url_and_unsafe_file_url(
    http_refs_api: Api, file_server: FileServer
) -> None:
    api = http_refs_api
    file_server.files = {
        "v.mp4": b"video-bytes",
        "refs.jsonl": f'{{"name": "v.mp4", "url": "{file_server.url}/v.mp4"}}\n'.encode(),
    }
    url = api.ds("/batches/vref/bulk-upload/video-references")
    reply = await api.post(url, {"videoReferencesURL": f"{file_server.url}/refs.jsonl"})
    assert reply.status == 200
    assert set(reply.body) >= {"ingestId", "duplicated"}
    await api.wait_count("vref", 1)
    assert api.emu.state()["batches"]["vref"]["batchContentType"] == "videos"
    unsafe = await api.post(
        api.ds("/batches/uref/bulk-upload/image-references"),
        {"imageReferencesURL": "https://storage.example.com/refs.jsonl"},
    )
    assert unsafe.status == 200

    async def failed() -> bool:
        shards = api.emu.state()["batches"]["uref"]["shards"]
        return bool(shards) and shards[0]["statusType"] == "error"

    await wait_for(failed, "the unsafe references ingest to fail")
    shards = (await api.get(api.ds("/batches/uref/shards"))).body["shards"]
    assert shards[0]["statusMetadata"]["reason"] == "unsafe-url-detected"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"imageReferences": [{"name": "a.jpg", "url": "ftp://127.0.0.1/a.jpg"}]},
        {"imageReferences": [{"name": "a.jpg", "url": "file:///etc/passwd"}]},
        {"imageReferencesURL": "s3://bucket/refs.jsonl"},
        {"imageReferences": [], "imageReferencesURL": "https://x/y"},
        {"imageReferences": [{"name": "../a.jpg", "url": "http://127.0.0.1/a.jpg"}]},
        {
            "imageReferences": [{"name": "a.jpg", "url": "http://127.0.0.1/a.jpg"}],
            "notificationCategories": ["everything"],
        },
    ],
)
async def test_bad_reference_requests_are_400(api: Api, body: dict[str, object]) -> None:
    reply = await api.post(api.ds("/batches/r/bulk-upload/image-references"), body)
    assert reply.status == 400
    assert "error" in reply.body


async def test_emulator_fixture_state_dir_holds_blobs(emulator: Emulator, api: Api) -> None:
    await api.upload_image("disk", "a.jpg", b"on-disk")
    blob_dir = (emulator.config.state_dir or Path()) / "blobs"
    assert [p.read_bytes() for p in blob_dir.iterdir()] == [b"on-disk"]


def test_each_seed_draws_its_own_shard_words_and_only_failure_says_error() -> None:
    # The vocabulary is opaque: a client keying on one seed's words fails against another's.
    drawn = [ShardVocabulary.drawn(seed) for seed in range(20)]
    assert len({v.ingested[0] for v in drawn}) == 20
    assert len({v.received[0] for v in drawn}) == 20
    for v in drawn:
        assert "error" in v.failed[1]
        assert all("error" not in kind for _, kind in (v.received, v.ingested, v.partial))
    assert ShardVocabulary.drawn(7) == ShardVocabulary.drawn(7)
