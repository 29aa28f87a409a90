"""Helpers for the emulator tests: a thin raw-HTTP client and a webhook receiver."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from rfbatch.emulator import Emulator
from tests.tars import tar_of
from tests.waiting import wait_for


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """Raw calls against an emulator: the URL layout of the contract, the key in the query."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session
        self.key = emu.config.api_key
        self.ws = emu.config.workspace

    def ds(self, path: str) -> str:
        return f"{self.emu.base_url}/data-staging/v1/external/{self.ws}{path}"

    def bp(self, path: str) -> str:
        return f"{self.emu.base_url}/batch-processing/v1/external/{self.ws}{path}"

    async def call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        key: str | None = "default",
        **kwargs: Any,
    ) -> Reply:
        query = dict(params or {})
        if key == "default":
            query["api_key"] = self.key
        elif key is not None:
            query["api_key"] = key
        async with self.session.request(method, url, params=query, **kwargs) as resp:
            raw = await resp.read()
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            return Reply(resp.status, body, dict(resp.headers))

    async def get(self, url: str, **params: str) -> Reply:
        return await self.call("GET", url, params=params)

    async def post(self, url: str, json_body: Any = None, **params: str) -> Reply:
        return await self.call("POST", url, params=params, json=json_body)

    async def upload_image(
        self, batch: str, name: str, data: bytes, field_name: str | None = None
    ) -> Reply:
        form = aiohttp.FormData()
        form.add_field(field_name or name, data, filename=name)
        return await self.call(
            "POST", self.ds(f"/batches/{batch}/upload/image"), params={"fileName": name}, data=form
        )

    async def shard_url(self, batch: str) -> dict[str, Any]:
        reply = await self.post(self.ds(f"/batches/{batch}/bulk-upload/image-files"))
        assert reply.status == 200, reply.body
        details: dict[str, Any] = reply.body["signedURLDetails"]
        return details

    async def put(self, details: dict[str, Any], body: bytes) -> int:
        async with self.session.put(
            details["uploadURL"], data=body, headers=details["extensionHeaders"]
        ) as resp:
            return resp.status

    async def upload_tar(
        self,
        batch: str,
        members: dict[str, bytes],
        notification: dict[str, Any] | None = None,
    ) -> None:
        status = await self.put(await self.shard_url(batch), tar_of(members, notification))
        assert status == 200

    async def count(self, batch: str, part: str | None = None) -> int:
        params = {"partName": part} if part else {}
        reply = await self.get(self.ds(f"/batches/{batch}/count"), **params)
        assert reply.status == 200, reply.body
        value: int = reply.body["count"]
        return value

    async def wait_count(self, batch: str, expected: int) -> None:
        async def probe() -> bool:
            reply = await self.get(self.ds(f"/batches/{batch}/count"))
            return reply.status == 200 and reply.body["count"] == expected

        await wait_for(probe, f"batch {batch} to count {expected}")

    async def list_all(
        self, batch: str, part: str | None = None, page_size: int = 100
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params = {"pageSize": str(page_size)}
            if part:
                params["partName"] = part
            if token:
                params["nextPageToken"] = token
            reply = await self.get(self.ds(f"/batches/{batch}/list"), **params)
            assert reply.status == 200, reply.body
            out.extend(reply.body["filesMetadata"])
            token = reply.body["nextPageToken"]
            if token is None:
                return out

    async def download(self, url: str) -> bytes:
        async with self.session.get(url) as resp:
            assert resp.status == 200
            data = await resp.read()
            assert resp.content_length == len(data)
            return data

    async def job(self, job_id: str) -> dict[str, Any]:
        reply = await self.get(self.bp(f"/jobs/{job_id}"))
        assert reply.status == 200, reply.body
        job: dict[str, Any] = reply.body["job"]
        return job

    async def wait_terminal(self, job_id: str) -> dict[str, Any]:
        final: dict[str, Any] = {}

        async def probe() -> bool:
            nonlocal final
            final = await self.job(job_id)
            return bool(final["isTerminal"])

        await wait_for(probe, f"job {job_id} to end")
        return final


def job_body(batch: str, workflow: str = "my-workflow", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "workflows-processing-specification-v1",
        "workspace": "test-ws",
        "workflowId": workflow,
    }
    spec.update(extra.pop("spec", {}))
    return {
        "type": extra.pop("type", "simple-image-processing-v1"),
        "jobInput": {"type": "staging-batch-input-v1", "batchId": batch},
        "computeConfiguration": {"type": "compute-configuration-v2", "machineType": "cpu"},
        "processingSpecification": spec,
        **extra,
    }


@dataclass
class Hook:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets; can refuse the first calls."""

    url: str = ""
    received: list[Hook] = field(default_factory=list)
    refuse_first: int = 0
    calls: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.refuse_first:
            return web.Response(status=503)
        self.received.append(Hook(dict(request.headers), await request.json()))
        return web.Response(status=200)

    def of_type(self, kind: str) -> list[Hook]:
        return [h for h in self.received if h.body.get("type") == kind]


@dataclass
class FileServer:
    """Serves fixed bytes under /files/<name> on 127.0.0.1 (a stand-in for cloud storage)."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)
