"""API key checks, envelope and metadata, simple uploads, batch-kind rules, the state endpoint."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from rfbatch.emulator import Emulator, EmulatorConfig, create_app
from tests.emulator.support import Api

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_workspace_lookup_returns_slug_and_status(api: Api) -> None:
    reply = await api.get(f"{api.emu.base_url}/")
    assert reply.status == 200
    assert reply.body == {"status": "ok", "workspace": "test-ws"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/data-staging/v1/external/test-ws/batches"),
        ("GET", "/data-staging/v1/external/test-ws/batches/b/count"),
        ("POST", "/data-staging/v1/external/test-ws/batches/b/bulk-upload/image-files"),
        ("POST", "/data-staging/v1/external/test-ws/batches/b/upload/video"),
        ("GET", "/batch-processing/v1/external/test-ws/jobs"),
        ("POST", "/batch-processing/v1/external/test-ws/jobs/j1/abort"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_every_api_route_refuses_missing_or_wrong_key(
    api: Api, method: str, path: str, key: str | None
) -> None:
    reply = await api.call(method, api.emu.base_url + path, key=key)
    assert reply.status == 401
    assert "error" in reply.body
    assert api.key not in str(reply.body)


async def test_other_workspace_is_forbidden(api: Api) -> None:
    url = f"{api.emu.base_url}/data-staging/v1/external/someone-else/batches"
    assert (await api.get(url)).status == 403


async def test_unknown_batch_is_404_with_error_body(api: Api) -> None:
    reply = await api.get(api.ds("/batches/nope"))
    assert reply.status == 404
    assert "nope" in reply.body["error"]


async def test_simple_upload_accepts_any_field_name_and_keeps_display_name(api: Api) -> None:
    assert (
        await api.call(
            "POST",
            api.ds("/batches/simple-1/upload/image"),
            params={"fileName": "a.jpg", "displayName": "My Batch"},
            data=_form("file", "a.jpg", b"A" * 10),
        )
    ).status == 200
    assert (
        await api.upload_image("simple-1", "b.png", b"B" * 20, field_name="whatever")
    ).status == 200
    meta = await api.get(api.ds("/batches/simple-1"))
    batch = meta.body["batch"]
    assert meta.body["status"] == "ok"
    assert batch["displayName"] == "My Batch"
    assert batch["batchType"] == "simple-batch"
    assert batch["batchContentType"] == "images"
    assert ISO_Z.match(batch["createdDate"])
    assert ISO_Z.match(batch["expiryDate"])
    assert await api.count("simple-1") == 2
    state = api.emu.state()["batches"]["simple-1"]
    assert {i["name"]: i["size"] for i in state["items"]} == {"a.jpg": 10, "b.png": 20}


async def test_simple_upload_download_is_byte_identical(api: Api) -> None:
    payload = bytes(range(256)) * 1000
    assert (await api.upload_image("simple-2", "pic.jpg", payload)).status == 200
    [entry] = await api.list_all("simple-2")
    assert entry["fileName"] == "pic.jpg"
    assert entry["contentType"] == "image/jpeg"
    assert await api.download(entry["downloadURL"]) == payload


async def test_repeated_upload_counts_once_and_shows_received_twice(api: Api) -> None:
    for _ in range(2):
        assert (await api.upload_image("dup", "same.jpg", b"x")).status == 200
    assert await api.count("dup") == 1
    [item] = api.emu.state()["batches"]["dup"]["items"]
    assert item["received"] == 2


async def test_single_and_bulk_uploads_never_mix(api: Api) -> None:
    assert (await api.upload_image("mix-a", "a.jpg", b"a")).status == 200
    refused = await api.post(api.ds("/batches/mix-a/bulk-upload/image-files"))
    assert refused.status == 400
    assert "mixed" in refused.body["error"]
    await api.shard_url("mix-b")
    assert (await api.upload_image("mix-b", "a.jpg", b"a")).status == 400
    # Videos and images never share a batch either.
    assert (await api.post(api.ds("/batches/mix-a/upload/video"), fileName="v.mp4")).status == 400


async def test_upload_image_validates_its_request(api: Api) -> None:
    no_name = await api.call(
        "POST", api.ds("/batches/v/upload/image"), data=_form("f", "a.jpg", b"a")
    )
    assert no_name.status == 400
    assert (await api.upload_image("v", "notes.txt", b"text")).status == 400
    assert (await api.upload_image("Bad Id", "a.jpg", b"a")).status == 400


async def test_oversize_single_image_is_refused_and_recorded(tmp_path: object) -> None:
    import aiohttp

    from rfbatch.emulator import running_emulator

    config = EmulatorConfig(api_key="k", workspace="test-ws", max_image_bytes=1000)
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        api = Api(emu, session)
        reply = await api.upload_image("big", "big.jpg", b"x" * 1001)
        assert reply.status == 413
        assert "file-size-limit-exceeded" in reply.body["error"]
        assert (await api.upload_image("big", "ok.jpg", b"x" * 1000)).status == 200
        state = emu.state()["batches"]["big"]
        assert state["count"] == 1
        assert state["failedItems"] == [{"name": "big.jpg", "reason": "file-size-limit-exceeded"}]


async def test_video_upload_by_signed_url(api: Api) -> None:
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4000
    reply = await api.post(api.ds("/batches/vids/upload/video"), fileName="clip.mp4")
    assert reply.status == 200
    details = reply.body["signedURLDetails"]
    assert details["uploadURL"].startswith(api.emu.base_url + "/_upload/")
    assert details["extensionHeaders"]
    assert await api.put(details, video) == 200
    meta = (await api.get(api.ds("/batches/vids"))).body["batch"]
    assert (meta["batchType"], meta["batchContentType"]) == ("simple-batch", "videos")
    [entry] = await api.list_all("vids")
    assert entry["fileName"] == "clip.mp4"
    assert await api.download(entry["downloadURL"]) == video


async def test_list_batches_shows_every_batch(api: Api) -> None:
    for n in range(3):
        await api.upload_image(f"lb-{n}", "a.jpg", b"a")
    reply = await api.get(api.ds("/batches"))
    assert reply.status == 200
    assert [b["batchId"] for b in reply.body["batches"]] == ["lb-0", "lb-1", "lb-2"]
    assert reply.body["nextPageToken"] is None


async def test_parts_of_a_simple_batch_is_an_empty_list(api: Api) -> None:
    await api.upload_image("p", "a.jpg", b"a")
    reply = await api.get(api.ds("/batches/p/parts"))
    assert reply.body == {"status": "ok", "batchParts": []}


async def test_state_endpoint_needs_no_key_and_matches_handle(api: Api, emulator: Emulator) -> None:
    await api.upload_image("st", "a.jpg", b"abc")
    async with api.session.get(f"{emulator.base_url}/_emulator/state") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == emulator.state()
    assert body["workspace"] == "test-ws"
    assert body["batches"]["st"]["items"] == [
        {
            "name": "a.jpg",
            "size": 3,
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "received": 1,
            "partName": None,
        }
    ]
    assert set(body["counters"]) >= {
        "puts",
        "putsRejected",
        "downloads",
        "faultsInjected",
        "webhooksSent",
    }


async def test_state_endpoint_refuses_non_loopback_peers() -> None:
    app = create_app(EmulatorConfig())
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        ("192.0.2.7", 5555) if key == "peername" else default
    )
    request = make_mocked_request("GET", "/_emulator/state", app=app, transport=transport)
    match = await app.router.resolve(request)
    request._match_info = match
    with pytest.raises(web.HTTPForbidden):
        await match.handler(request)


def _form(field_name: str, file_name: str, data: bytes) -> object:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field(field_name, data, filename=file_name)
    return form
