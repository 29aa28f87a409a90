"""Pagination: every listed route walks many pages with an opaque token; bad tokens are 400."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator.support import Api, job_body


async def _walk(api: Api, url: str, key: str, page_size: int, **params: str) -> list[list[Any]]:
    pages: list[list[Any]] = []
    token: str | None = None
    while True:
        query = {"pageSize": str(page_size), **params}
        if token is not None:
            query["nextPageToken"] = token
        reply = await api.get(url, **query)
        assert reply.status == 200, reply.body
        assert "nextPageToken" in reply.body
        pages.append(reply.body[key])
        token = reply.body["nextPageToken"]
        if token is None:
            return pages
        assert len(pages) < 1000


async def test_list_walks_many_pages_without_gaps_or_repeats(api: Api) -> None:
    names = [f"img-{n:04d}.jpg" for n in range(250)]
    await api.upload_tar("many", {name: name.encode() for name in names})
    await api.wait_count("many", 250)
    pages = await _walk(api, api.ds("/batches/many/list"), "filesMetadata", 7)
    assert len(pages) == 36  # 35 full pages of 7 and one of 5
    assert all(len(p) == 7 for p in pages[:-1])
    assert len(pages[-1]) == 5
    assert [f["fileName"] for page in pages for f in page] == names


async def test_token_survives_items_added_while_walking(api: Api) -> None:
    await api.upload_tar("grow", {f"a{n}.jpg": b"a" for n in range(10)})
    await api.wait_count("grow", 10)
    first = await api.get(api.ds("/batches/grow/list"), pageSize="4")
    await api.upload_tar("grow", {f"b{n}.jpg": b"b" for n in range(3)})
    await api.wait_count("grow", 13)
    seen = [f["fileName"] for f in first.body["filesMetadata"]]
    token = first.body["nextPageToken"]
    while token:
        reply = await api.get(api.ds("/batches/grow/list"), pageSize="4", nextPageToken=token)
        seen += [f["fileName"] for f in reply.body["filesMetadata"]]
        token = reply.body["nextPageToken"]
    assert seen == [f"a{n}.jpg" for n in range(10)] + [f"b{n}.jpg" for n in range(3)]


async def test_batches_and_shards_paginate(api: Api) -> None:
    for n in range(12):
        await api.upload_image(f"pb-{n:02d}", "a.jpg", b"a")
    pages = await _walk(api, api.ds("/batches"), "batches", 5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [b["batchId"] for p in pages for b in p] == [f"pb-{n:02d}" for n in range(12)]
    for n in range(5):
        await api.upload_tar("sharded", {f"s{n}.jpg": b"s"})
    await api.wait_count("sharded", 5)
    shard_pages = await _walk(api, api.ds("/batches/sharded/shards"), "shards", 2)
    assert [len(p) for p in shard_pages] == [2, 2, 1]
    shards = [s for p in shard_pages for s in p]
    assert len({s["shardId"] for s in shards}) == 5
    # Status words are drawn per emulator; every ingested shard carries the same non-error pair.
    assert all(s["shardObjectsCount"] == 1 and "error" not in s["statusType"] for s in shards)
    assert len({(s["statusName"], s["statusType"]) for s in shards}) == 1


async def test_jobs_list_newest_first_with_token_key_always_present(api: Api) -> None:
    await api.upload_image("jb", "a.jpg", b"a")
    for n in range(5):
        assert (await api.post(api.bp(f"/jobs/job-{n}"), job_body("jb"))).status == 200
    pages = await _walk(api, api.bp("/jobs"), "jobs", 2)
    assert [[j["jobId"] for j in p] for p in pages] == [
        ["job-4", "job-3"],
        ["job-2", "job-1"],
        ["job-0"],
    ]


@pytest.mark.parametrize("token", ["garbage", "eyJsIjoiYmF0Y2hlcyIsImkiOjF9.0000000000000000", "."])
async def test_bad_tokens_are_400(api: Api, token: str) -> None:
    await api.upload_image("bt", "a.jpg", b"a")
    for url in (api.ds("/batches"), api.ds("/batches/bt/list"), api.ds("/batches/bt/shards")):
        reply = await api.get(url, nextPageToken=token)
        assert reply.status == 400, url
        assert "error" in reply.body
    reply = await api.get(api.bp("/jobs"), nextPageToken=token)
    assert reply.status == 400
    assert "message" in reply.body


async def test_token_of_one_listing_is_refused_by_another(api: Api) -> None:
    await api.upload_tar("t1", {f"{n}.jpg": b"x" for n in range(3)})
    await api.upload_tar("t2", {f"{n}.jpg": b"x" for n in range(3)})
    await api.wait_count("t1", 3)
    await api.wait_count("t2", 3)
    token = (await api.get(api.ds("/batches/t1/list"), pageSize="1")).body["nextPageToken"]
    assert token
    assert (await api.get(api.ds("/batches/t2/list"), nextPageToken=token)).status == 400


@pytest.mark.parametrize("size", ["0", "-3", "ten"])
async def test_bad_page_size_is_400(api: Api, size: str) -> None:
    assert (await api.get(api.ds("/batches"), pageSize=size)).status == 400
