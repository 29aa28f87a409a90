"""Data-staging routes (``/data-staging/v1/external/{workspace}/...``), contract section 3.

Batch kinds are fixed by the first upload: single images make a ``simple-batch`` of images,
bulk shards and image references a ``sharded-batch`` of images, videos (signed URL or
references) a ``simple-batch`` of videos. A later upload of another kind into the same batch is
refused with 400, since the contract forbids mixing single-image and bulk uploads in a batch.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from rfbatch.emulator.core import EmulatorCore, UploadIntent, core_of
from rfbatch.emulator.ingest import (
    SHARD_QUEUED,
    ReferencesIngest,
    plan_shards,
    run_references_ingest,
    unlink_quietly,
)
from rfbatch.emulator.model import (
    Batch,
    BatchType,
    ContentType,
    FailedItem,
    Item,
    Shard,
    UploadMode,
    is_image_name,
    utcnow,
    with_optional,
)
from rfbatch.emulator.pipe import CHUNK, PipeReader, feed_thread
from rfbatch.emulator.responses import Problem, ok, paged
from rfbatch.emulator.sinks import Blob, TooLargeError, store_blob

PREFIX = "/data-staging/v1/external/{workspace}"
BATCH = PREFIX + "/batches/{batch_id}"
CATEGORIES = frozenset({"ingest-status", "files-status"})
MAX_REFERENCES = {"image": 20_000, "video": 5_000}


def _batch(request: web.Request) -> Batch:
    batch = core_of(request).store.get(request.match_info["batch_id"])
    if batch is None or not batch.visible:
        raise Problem(404, f"batch {request.match_info['batch_id']!r} not found")
    return batch


def _valid_batch_id(batch_id: str) -> str:
    if not batch_id or len(batch_id) > 64 or not all(c in _BATCH_CHARS for c in batch_id):
        raise Problem(400, "batch id must match ^[a-z0-9_-]{1,64}$")
    return batch_id


_BATCH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _batch_for_upload(
    request: web.Request,
    *,
    batch_type: BatchType,
    content_type: ContentType,
    mode: UploadMode,
    create: bool = True,
) -> Batch | None:
    """The target batch of an upload, refusing one of another kind; created when ``create``."""
    core = core_of(request)
    batch_id = _valid_batch_id(request.match_info["batch_id"])
    batch = core.store.get(batch_id)
    if batch is not None:
        if batch.upload_mode == "system":
            raise Problem(400, f"batch {batch_id!r} holds job outputs; it cannot take uploads")
        if batch.content_type != content_type:
            raise Problem(400, f"batch {batch_id!r} holds {batch.content_type}, not {content_type}")
        if batch.upload_mode != mode:
            raise Problem(
                400,
                f"batch {batch_id!r} is a {batch.batch_type}: single-image and bulk uploads "
                "cannot be mixed in one batch",
            )
        return batch
    if not create:
        return None
    return core.store.create(
        batch_id,
        display_name=request.query.get("displayName"),
        batch_type=batch_type,
        content_type=content_type,
        upload_mode=mode,
    )


def _safe_file_name(name: str | None) -> str:
    if not name:
        raise Problem(400, "query parameter fileName is required")
    if "/" in name or "\\" in name or name in (".", "..") or len(name) > 512:
        raise Problem(400, "fileName must be a plain file name")
    return name


def _item_wire(
    core: EmulatorCore, request: web.Request, batch: Batch, item: Item
) -> dict[str, Any]:
    path = f"/_download/{batch.batch_id}/{item.item_id}"
    body: dict[str, Any] = {
        "downloadURL": f"{request.url.origin()}{core.signer.sign('GET', path)}",
        "fileName": item.name,
        "contentType": item.content_type,
    }
    return with_optional(
        body,
        partName=item.part_name,
        shardId=item.shard_id,
        nestedContentType=item.nested_content_type,
    )


def _signed_url_details(request: web.Request, intent: UploadIntent) -> dict[str, Any]:
    core = core_of(request)
    url = f"{request.url.origin()}{core.signer.sign('PUT', f'/_upload/{intent.token}')}"
    return {
        "signedURLDetails": {
            "uploadURL": url,
            "extensionHeaders": dict(intent.extension_headers),
            "method": "PUT",
        }
    }


# listing ------------------------------------------------------------------------------------


async def list_batches(request: web.Request) -> web.Response:
    core = core_of(request)
    seen = [b for b in core.store.batch_list if b.visible]  # none before a shard is processed
    return paged(request, core.tokens, "batches", seen, "batches", Batch.wire)


async def batch_metadata(request: web.Request) -> web.Response:
    return ok({"batch": _batch(request).wire()})


async def count(request: web.Request) -> web.Response:
    return ok({"count": _batch(request).count(request.query.get("partName"))})


async def parts(request: web.Request) -> web.Response:
    batch = _batch(request)
    return ok({"batchParts": [p.wire() for p in batch.parts.values()]})


async def list_files(request: web.Request) -> web.Response:
    core = core_of(request)
    batch = _batch(request)
    part = request.query.get("partName")
    return paged(
        request,
        core.tokens,
        f"list:{batch.batch_id}:{part or ''}",
        batch.listing(part),
        "filesMetadata",
        lambda item: _item_wire(core, request, batch, item),
    )


async def shards(request: web.Request) -> web.Response:
    core = core_of(request)
    batch = _batch(request)
    return paged(
        request, core.tokens, f"shards:{batch.batch_id}", batch.shards, "shards", Shard.wire
    )


# uploads ------------------------------------------------------------------------------------


async def upload_image(request: web.Request) -> web.Response:
    core = core_of(request)
    name = _safe_file_name(request.query.get("fileName"))
    if not is_image_name(name):
        raise Problem(400, f"{name!r} is not an image file name")
    existing = _batch_for_upload(
        request, batch_type="simple-batch", content_type="images", mode="single", create=False
    )
    if not request.content_type.startswith("multipart/"):
        raise Problem(400, "the body must be multipart/form-data with one file part")
    reader = await request.multipart()
    part = await reader.next()
    if not isinstance(part, BodyPartReader):
        raise Problem(400, "the body must hold exactly one file part")
    limit = core.config.max_image_bytes
    blob_dir = core.blob_dir

    def consume(source: PipeReader) -> Blob:
        return store_blob(source, blob_dir, limit)

    try:
        blob = await feed_thread(_part_chunks(part), consume, limiter=core.pipe_limiter)
    except TooLargeError:
        batch = existing or _batch_for_upload(
            request, batch_type="simple-batch", content_type="images", mode="single"
        )
        assert batch is not None
        batch.failed.append(FailedItem(name, "file-size-limit-exceeded"))
        raise Problem(
            413, f"file-size-limit-exceeded: images are limited to {limit} bytes"
        ) from None
    if await reader.next() is not None:
        await unlink_quietly(core, blob.path)
        raise Problem(400, "the body must hold exactly one file part")
    batch = existing or _batch_for_upload(
        request, batch_type="simple-batch", content_type="images", mode="single"
    )
    assert batch is not None
    _, old = batch.put_item(name=name, size=blob.size, sha256=blob.sha256, blob=blob.path)
    await unlink_quietly(core, old)
    return ok()


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            return
        yield chunk


async def video_url(request: web.Request) -> web.Response:
    name = _safe_file_name(request.query.get("fileName"))
    batch = _batch_for_upload(
        request, batch_type="simple-batch", content_type="videos", mode="single"
    )
    assert batch is not None
    intent = core_of(request).mint_upload(
        kind="video", batch_id=batch.batch_id, file_name=name, shard_id=None
    )
    return ok(_signed_url_details(request, intent))


async def shard_url(request: web.Request) -> web.Response:
    batch = _batch_for_upload(
        request, batch_type="sharded-batch", content_type="images", mode="bulk"
    )
    assert batch is not None
    intent = core_of(request).mint_upload(
        kind="shard", batch_id=batch.batch_id, file_name=None, shard_id=uuid.uuid4().hex
    )
    return ok(_signed_url_details(request, intent))


async def image_references(request: web.Request) -> web.Response:
    return await _references(request, "image")


async def video_references(request: web.Request) -> web.Response:
    return await _references(request, "video")


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise Problem(400, f"{what} must be an http(s) URL")
    return url


def _check_reference_url(request: web.Request, url: Any, what: str) -> str:
    """A reference must be https, as the official client requires (contract section 3.10)."""
    checked = _check_url(url, what)
    if checked.lower().startswith("http://") and not core_of(request).config.allow_http_references:
        raise Problem(400, f"{what} must be an https URL")
    return checked


async def _references(request: web.Request, kind: str) -> web.Response:
    core = core_of(request)
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object")
    list_key, url_key = f"{kind}References", f"{kind}ReferencesURL"
    refs_raw, refs_url = body.get(list_key), body.get(url_key)
    if (refs_raw is None) == (refs_url is None):
        raise Problem(400, f"give exactly one of {list_key} and {url_key}")
    refs: list[dict[str, str]] | None = None
    if refs_raw is not None:
        if not isinstance(refs_raw, list) or not refs_raw:
            raise Problem(400, f"{list_key} must be a non-empty list")
        if len(refs_raw) > MAX_REFERENCES[kind]:
            raise Problem(400, f"at most {MAX_REFERENCES[kind]} references per request")
        refs = []
        for entry in refs_raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise Problem(400, f"every entry of {list_key} needs a name and a url")
            refs.append(
                {
                    "name": _safe_ref_name(entry["name"]),
                    "url": _check_reference_url(request, entry.get("url"), "url"),
                }
            )
    else:
        _check_reference_url(request, refs_url, url_key)
    notifications_url = body.get("notificationsURL")
    if notifications_url is not None:
        _check_url(notifications_url, "notificationsURL")
    categories = body.get("notificationCategories") or ["ingest-status"]
    if not isinstance(categories, list) or not set(categories) <= CATEGORIES:
        raise Problem(400, f"notificationCategories must be a subset of {sorted(CATEGORIES)}")
    ingest_id = body.get("ingestId") or str(uuid.uuid4())
    if not isinstance(ingest_id, str):
        raise Problem(400, "ingestId must be a string")
    if kind == "image":
        batch = _batch_for_upload(
            request, batch_type="sharded-batch", content_type="images", mode="bulk"
        )
    else:
        batch = _batch_for_upload(
            request, batch_type="simple-batch", content_type="videos", mode="single"
        )
    assert batch is not None
    key = (batch.batch_id, ingest_id)
    previous = core.reference_ingests.get(key)
    if previous is not None:
        return ok({**previous, "duplicated": True})
    shard_ids = plan_shards(len(refs)) if refs is not None else []
    for shard_id in shard_ids:
        batch.add_shard(Shard(shard_id, *SHARD_QUEUED, utcnow()))
    job = ReferencesIngest(
        batch_id=batch.batch_id,
        ingest_id=ingest_id,
        kind=kind,
        references=refs,
        references_url=refs_url,
        shard_ids=shard_ids,
        notifications_url=notifications_url,
        categories=list(categories),
    )
    answer: dict[str, Any] = {"ingestId": ingest_id}
    if kind == "image" and refs is not None:
        answer["shardIds"] = shard_ids
    core.reference_ingests[key] = answer
    core.tasks.spawn(run_references_ingest(core, job))
    return ok({**answer, "duplicated": False})


def _safe_ref_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise Problem(400, f"reference name {name!r} must be a plain file name")
    return name


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX + "/batches", list_batches, name="list_batches")
    r.add_get(BATCH, batch_metadata, name="batch")
    r.add_get(BATCH + "/count", count, name="count")
    r.add_get(BATCH + "/parts", parts, name="parts")
    r.add_get(BATCH + "/list", list_files, name="list_files")
    r.add_get(BATCH + "/shards", shards, name="shards")
    r.add_post(BATCH + "/upload/image", upload_image, name="upload_image")
    r.add_post(BATCH + "/upload/video", video_url, name="video_url")
    r.add_post(BATCH + "/bulk-upload/image-files", shard_url, name="shard_url")
    r.add_post(BATCH + "/bulk-upload/image-references", image_references, name="image_references")
    r.add_post(BATCH + "/bulk-upload/video-references", video_references, name="video_references")
