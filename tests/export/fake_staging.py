"""A tiny data-staging service on 127.0.0.1 that serves whatever listings a test gives it.

The emulator refuses to store hostile names (``../x``, absolute paths, NUL) or hostile archives,
so the tests that check those are refused point rfbatch here instead. It speaks the endpoints an
export uses: workspace, batch metadata, parts, count, paginated ``/list``, and signed-looking
downloads whose query carries a signature that must never show up in a message.
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.serving import serving

WORKSPACE = "fake-ws"
SIGNATURE = "c2lnbmF0dXJlLXNob3VsZC1uZXZlci1sZWFr"


@dataclass
class FakeFile:
    name: str
    data: bytes | None
    """``None``: the download answers 404."""


@dataclass
class FakeBatch:
    batch_type: str
    parts: dict[str | None, list[FakeFile]]
    """Files by part name; ``None`` is the one unnamed part of a simple or sharded batch."""


@dataclass
class FakeStaging:
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    base_url: str = ""
    served: Counter[str] = field(default_factory=Counter)
    _blobs: dict[str, FakeFile] = field(default_factory=dict)

    def add(self, batch_id: str, batch: FakeBatch) -> None:
        self.batches[batch_id] = batch
        for part, files in batch.parts.items():
            for index, f in enumerate(files):
                self._blobs[f"{batch_id}.{part or ''}.{index}"] = f

    def _batch(self, request: web.Request) -> FakeBatch:
        batch = self.batches.get(request.match_info["batch"])
        if batch is None:
            raise web.HTTPNotFound(
                text='{"error": "no such batch"}', content_type="application/json"
            )
        return batch

    async def workspace(self, request: web.Request) -> web.Response:
        return web.json_response({"workspace": WORKSPACE, "status": "ok"})

    async def metadata(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        batch_id = request.match_info["batch"]
        return web.json_response(
            {
                "status": "ok",
                "batch": {
                    "displayName": batch_id,
                    "batchId": batch_id,
                    "batchType": batch.batch_type,
                    "batchContentType": "mixed",
                    "createdDate": "2026-01-01T00:00:00Z",
                    "expiryDate": "2026-01-08T00:00:00Z",
                },
            }
        )

    async def parts(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        listed = [
            {"partName": name, "partType": "results", "contentType": "mixed"}
            for name in batch.parts
            if name is not None
        ]
        return web.json_response({"status": "ok", "batchParts": listed})

    async def listing(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        batch_id = request.match_info["batch"]
        part = request.query.get("partName")
        files = batch.parts.get(part, [])
        start = int(request.query.get("nextPageToken") or 0)
        size = int(request.query.get("pageSize") or 100)
        page = files[start : start + size]
        following = start + size if start + size < len(files) else None
        entries = [
            {
                "downloadURL": f"{self.base_url}/blob/{batch_id}.{part or ''}.{start + i}"
                f"?X-Goog-Signature={SIGNATURE}",
                "fileName": f.name,
                "contentType": "application/octet-stream",
                **({"partName": part} if part else {}),
            }
            for i, f in enumerate(page)
        ]
        return web.json_response(
            {
                "status": "ok",
                "filesMetadata": entries,
                "nextPageToken": str(following) if following is not None else None,
            }
        )

    async def blob(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        f = self._blobs.get(key)
        if request.query.get("X-Goog-Signature") != SIGNATURE:
            return web.Response(status=403, text="SignatureDoesNotMatch")
        if f is None or f.data is None:
            return web.Response(status=404, text="NoSuchKey")
        self.served[f.name] += 1
        return web.Response(body=f.data)

    def app(self) -> web.Application:
        app = web.Application()
        prefix = f"/data-staging/v1/external/{WORKSPACE}/batches/{{batch}}"
        app.router.add_get("/", self.workspace)
        app.router.add_get(prefix, self.metadata)
        app.router.add_get(prefix + "/parts", self.parts)
        app.router.add_get(prefix + "/list", self.listing)
        app.router.add_get("/blob/{key}", self.blob)
        return app


@asynccontextmanager
async def running_fake(staging: FakeStaging) -> AsyncIterator[FakeStaging]:
    async with serving(staging.app()) as base_url:
        staging.base_url = base_url
        yield staging


def hostile_tar(kind: str, *, gz: bool = False) -> bytes:
    """An archive with one good member and one hostile one of the given ``kind``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        good = b"fine"
        info = tarfile.TarInfo("good-member.txt")
        info.size = len(good)
        tar.addfile(info, io.BytesIO(good))
        bad = tarfile.TarInfo()
        payload = b"owned"
        if kind == "dotdot":
            bad.name, bad.size = "../../escaped.txt", len(payload)
        elif kind == "absolute":
            bad.name, bad.size = "/tmp/rfbatch-absolute-escape.txt", len(payload)
        elif kind == "symlink":
            bad.name, bad.type, bad.linkname, payload = "link", tarfile.SYMTYPE, "/etc", b""
        elif kind == "hardlink":
            bad.name, bad.type, bad.linkname, payload = "hard", tarfile.LNKTYPE, "/etc/passwd", b""
        elif kind == "device":
            bad.name, bad.type, payload = "dev", tarfile.CHRTYPE, b""
        else:
            raise ValueError(kind)
        tar.addfile(bad, io.BytesIO(payload) if payload else None)
    return buf.getvalue()


def safe_tar(members: Mapping[str, bytes], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
