"""Signed URLs: signature, extension headers, expiry, for uploads and downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp

from rfbatch.emulator import EmulatorConfig, running_emulator
from tests.emulator.support import Api
from tests.tars import tar_of
from tests.waiting import wait_for


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _put(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> int:
    async with session.put(url, data=body, headers=headers) as resp:
        return resp.status


async def test_put_without_content_type_is_accepted(api: Api) -> None:
    details = await api.shard_url("ct")
    tar = tar_of({"a.jpg": b"a"})
    # aiohttp adds no Content-Type for raw bytes unless told to; make sure none is sent.
    async with api.session.put(
        details["uploadURL"],
        data=tar,
        headers=details["extensionHeaders"],
        skip_auto_headers=["Content-Type"],
    ) as resp:
        assert resp.status == 200
    await api.wait_count("ct", 1)


async def test_tampered_signature_or_expiry_is_403(api: Api) -> None:
    details = await api.shard_url("sig")
    tar = tar_of({"a.jpg": b"a"})
    headers = details["extensionHeaders"]
    url = details["uploadURL"]
    assert await _put(api.session, _with_query(url, signature="0" * 64), tar, headers) == 403
    assert await _put(api.session, _with_query(url, expires="9999999999.000"), tar, headers) == 403
    bare = urlunsplit(urlsplit(url)._replace(query=""))
    assert await _put(api.session, bare, tar, headers) == 403
    state = api.emu.state()
    assert state["counters"]["putsRejected"] == 3
    assert state["counters"]["puts"] == 0
    assert state["batches"]["sig"]["count"] == 0


async def test_missing_or_wrong_extension_header_is_403(api: Api) -> None:
    details = await api.shard_url("hdr")
    tar = tar_of({"a.jpg": b"a"})
    async with api.session.put(details["uploadURL"], data=tar) as resp:
        assert resp.status == 403
        assert "MissingSecurityHeader" in await resp.text()
    wrong = {k: "0,1" for k in details["extensionHeaders"]}
    assert await _put(api.session, details["uploadURL"], tar, wrong) == 403
    assert await api.put(details, tar) == 200


async def test_expired_upload_and_download_urls_are_refused_with_400_or_403() -> None:
    # As GCS: ExpiredToken comes as 403 for some URLs and 400 for others; a client must
    # recognise both. Each URL always gets the same answer.
    config = EmulatorConfig(api_key="k", workspace="test-ws", url_ttl=0.0)
    statuses: set[int] = set()
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        api = Api(emu, session)
        for n in range(12):
            details = await api.shard_url(f"exp{n}")
            for _ in range(2):
                async with session.put(
                    details["uploadURL"],
                    data=tar_of({"a.jpg": b"a"}),
                    headers=details["extensionHeaders"],
                ) as resp:
                    assert "ExpiredToken" in await resp.text()
                    statuses.add(resp.status)
        assert (await api.upload_image("dl", "a.jpg", b"a")).status == 200
        [entry] = await api.list_all("dl")
        async with session.get(entry["downloadURL"]) as resp:
            assert resp.status in (400, 403)
            assert "ExpiredToken" in await resp.text()
    assert statuses == {400, 403}


async def test_expire_urls_hook_expires_issued_urls_only(api: Api) -> None:
    await api.upload_image("hook", "a.jpg", b"abc")
    [old] = await api.list_all("hook")
    details = await api.shard_url("hook2")
    api.emu.expire_urls()
    async with api.session.get(old["downloadURL"]) as resp:
        assert resp.status in (400, 403)
        assert "ExpiredToken" in await resp.text()
    assert await api.put(details, tar_of({"a.jpg": b"a"})) in (400, 403)
    [fresh] = await api.list_all("hook")
    assert await api.download(fresh["downloadURL"]) == b"abc"


async def test_download_url_is_bound_to_its_item(api: Api) -> None:
    await api.upload_image("bind", "a.jpg", b"aaa")
    await api.upload_image("bind", "b.jpg", b"bbb")
    first, second = await api.list_all("bind")
    swapped = urlunsplit(
        urlsplit(second["downloadURL"])._replace(query=urlsplit(first["downloadURL"]).query)
    )
    async with api.session.get(swapped) as resp:
        assert resp.status == 403


async def test_upload_url_can_be_reused_like_a_bucket_object(api: Api) -> None:
    details = await api.shard_url("reuse")
    tar = tar_of({"a.jpg": b"a", "b.jpg": b"b"})
    assert await api.put(details, tar) == 200
    assert await api.put(details, tar) == 200
    await api.wait_count("reuse", 2)

    async def received_twice() -> bool:
        items = api.emu.state()["batches"]["reuse"]["items"]
        return all(i["received"] == 2 for i in items)

    await wait_for(received_twice, "the second PUT to be ingested")
    assert len(api.emu.state()["batches"]["reuse"]["shards"]) == 1


async def test_a_put_without_content_length_is_refused_with_411(api: Api) -> None:
    # The signature binds a length range: storage will not take a body of unannounced length.
    tar = tar_of({f"{n}.jpg": bytes([n]) * 300_000 for n in range(3)})

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(tar), 65_536):
            yield tar[start : start + 65_536]

    details = await api.shard_url("chunked")
    async with api.session.put(
        details["uploadURL"], data=body(), headers=details["extensionHeaders"]
    ) as resp:
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert resp.status == 411
        assert "MissingContentLength" in await resp.text()
    assert api.emu.state()["counters"]["puts"] == 0


async def test_a_body_over_the_limit_is_400_entity_too_large_and_the_limit_is_stated() -> None:
    config = EmulatorConfig(api_key="k", workspace="test-ws", max_upload_bytes=12_000)
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        api = Api(emu, session)
        details = await api.shard_url("big")
        assert details["extensionHeaders"]["x-goog-content-length-range"] == "0,12000"
        async with session.put(
            details["uploadURL"],
            data=tar_of({"a.jpg": b"a" * 20_000}),
            headers=details["extensionHeaders"],
        ) as resp:
            assert resp.status == 400
            assert "EntityTooLarge" in await resp.text()
        assert await api.put(details, tar_of({"a.jpg": b"a" * 1000})) == 200
