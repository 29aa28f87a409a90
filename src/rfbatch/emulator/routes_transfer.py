"""The storage side: signed-URL PUTs and downloads, plus the loopback-only state route.

Signed URLs answer like a bucket does: 403 for a bad signature, a missing or wrong extension
header, or an expired URL; 400 when the body is over the announced length range; 200 with an
empty body on success. Bodies are streamed through a worker thread (see :mod:`pipe`).

Downloads in ``store="digests"`` mode serve zero-filled bytes of the recorded size for items
whose bytes were never kept; job outputs are always kept, so they download byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import anyio
from aiohttp import web

from rfbatch.emulator.core import EmulatorCore, UploadIntent, core_of
from rfbatch.emulator.faults import Fault, FaultProfile
from rfbatch.emulator.ingest import ingest_tar_later, mark_shard_received, unlink_quietly
from rfbatch.emulator.pipe import CHUNK, PipeAbortedError, PipeReader, coalesced, feed_thread
from rfbatch.emulator.signing import Verdict
from rfbatch.emulator.sinks import Blob, TarResult, TooLargeError, consume_tar, store_blob

FAULT_KEY = web.RequestKey("rfbatch_emulator_fault", Fault)
_RESET_WITHOUT_LENGTH = 64 * 1024


def hard_reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST, the way a crashed peer or proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _gcs_error(status: int, code: str, message: str) -> web.Response:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _check_signature(request: web.Request, method: str) -> web.Response | None:
    core = core_of(request)
    fault = request.get(FAULT_KEY)
    if fault is not None and fault.kind == "expire":
        return _gcs_error(403, "ExpiredToken", "The provided token has expired (injected fault).")
    verdict = core.signer.verify(method, request.path, request.query)
    if verdict is Verdict.EXPIRED:
        # Storage answers an expired URL with 403 or with 400 (GCS V4 says ExpiredToken with
        # either): the same URL always gets the same one, half of them each.
        status = 400 if zlib.crc32(request.path.encode()) % 2 else 403
        return _gcs_error(status, "ExpiredToken", "The provided token has expired.")
    if verdict is not Verdict.OK:
        return _gcs_error(
            403, "SignatureDoesNotMatch", "The request signature we calculated does not match."
        )
    return None


# PUT ----------------------------------------------------------------------------------------


async def put_upload(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    intent = core.uploads.get(request.match_info["token"])
    refusal = _check_signature(request, "PUT")
    if refusal is None and intent is None:
        refusal = _gcs_error(403, "SignatureDoesNotMatch", "Unknown upload URL.")
    if refusal is None and intent is not None:
        refusal = _check_extension_headers(request, intent)
    if refusal is not None:
        core.counters.putsRejected += 1
        return refusal
    assert intent is not None
    fault = request.get(FAULT_KEY)
    limit: int | None = None
    if fault is not None and fault.kind == "reset":
        length = request.content_length
        cut = core.injector.profile.cut_fraction if core.injector else 0.5
        limit = int(length * cut) if length else _RESET_WITHOUT_LENGTH
    try:
        outcome = await _receive(core, request, intent, limit)
    except (ConnectionError, PipeAbortedError, asyncio.IncompleteReadError):
        core.counters.putsRejected += 1
        hard_reset(request)
        return web.Response(status=400)
    except TooLargeError:
        core.counters.putsRejected += 1
        return _too_large(core.config.too_large_status)
    if limit is not None:
        # The injected reset: part of the body was read, nothing is kept, the peer sees a RST.
        await _discard(core, outcome)
        core.counters.putsRejected += 1
        hard_reset(request)
        return web.Response(status=500)
    core.counters.puts += 1
    await _commit(core, intent, outcome)
    return web.Response(status=200)


def _check_extension_headers(request: web.Request, intent: UploadIntent) -> web.Response | None:
    for name, value in intent.extension_headers.items():
        got = request.headers.get(name)
        if got is None:
            return _gcs_error(403, "MissingSecurityHeader", f"Your request was missing {name}.")
        if got != value:
            return _gcs_error(403, "SignatureDoesNotMatch", f"Header {name} does not match.")
    length = request.content_length
    if length is None:
        # A signed URL binds a length range: a body of unannounced length cannot be checked.
        return _gcs_error(411, "MissingContentLength", "You must provide the Content-Length.")
    config = core_of(request).config
    if length > config.max_upload_bytes:
        return _too_large(config.too_large_status)
    return None


def _too_large(status: int) -> web.Response:
    if status == 413:
        return web.Response(status=413, text="Request Entity Too Large")
    return _gcs_error(status, "EntityTooLarge", "Your proposed upload exceeds the maximum size.")


async def _receive(
    core: EmulatorCore, request: web.Request, intent: UploadIntent, limit: int | None
) -> Blob | TarResult:
    blob_dir = core.blob_dir
    source = coalesced(request.content, limit)
    if intent.kind == "video":

        def consume_video(reader: PipeReader) -> Blob:
            return store_blob(reader, blob_dir, core.config.max_upload_bytes)

        return await feed_thread(source, consume_video, limiter=core.pipe_limiter)
    max_image = core.config.max_image_bytes
    check = core.config.check_image_content

    def consume_shard(reader: PipeReader) -> TarResult:
        return consume_tar(reader, blob_dir, max_image, check_content=check)

    return await feed_thread(source, consume_shard, limiter=core.pipe_limiter)


async def _discard(core: EmulatorCore, outcome: Blob | TarResult) -> None:
    if isinstance(outcome, Blob):
        await unlink_quietly(core, outcome.path)
    else:
        await unlink_quietly(core, *(m.blob.path for m in outcome.members))


async def _commit(core: EmulatorCore, intent: UploadIntent, outcome: Blob | TarResult) -> None:
    batch = core.store.get(intent.batch_id)
    if batch is None:  # cannot happen: batches are never deleted; keep the disk clean anyway
        await _discard(core, outcome)
        return
    if isinstance(outcome, Blob):
        assert intent.file_name is not None
        _, old = batch.put_item(
            name=intent.file_name, size=outcome.size, sha256=outcome.sha256, blob=outcome.path
        )
        await unlink_quietly(core, old)
        return
    assert intent.shard_id is not None
    mark_shard_received(batch, intent.shard_id, outcome.size)
    core.tasks.spawn(ingest_tar_later(core, batch.batch_id, intent.shard_id, outcome))


# downloads ----------------------------------------------------------------------------------


async def download(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    refusal = _check_signature(request, "GET")
    if refusal is not None:
        return refusal
    batch = core.store.get(request.match_info["batch_id"])
    item = batch.by_id.get(request.match_info["item_id"]) if batch is not None else None
    if item is None:
        return _gcs_error(404, "NoSuchKey", "The specified key does not exist.")
    core.counters.downloads += 1
    fault = request.get(FAULT_KEY)
    headers = {
        "Content-Type": item.content_type,
        "Content-Disposition": f'attachment; filename="{item.name}"',
    }
    if fault is None and item.blob is not None and core.config.link is None:
        # sendfile() would go around a shaped link's transport: chunks below pass through it.
        return web.FileResponse(item.blob, headers=headers)
    cut = item.size
    if fault is not None and fault.kind in ("reset", "truncate"):
        profile: FaultProfile | None = core.injector.profile if core.injector else None
        cut = int(item.size * (profile.cut_fraction if profile else 0.5))
    resp = web.StreamResponse(headers=headers)
    resp.content_length = item.size
    await resp.prepare(request)
    async for chunk in _item_bytes(core, item.blob, item.size, cut):
        await resp.write(chunk)
    if cut < item.size:
        assert fault is not None
        if fault.kind == "reset":
            hard_reset(request)
        elif request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


async def _item_bytes(
    core: EmulatorCore, blob: Path | None, size: int, limit: int
) -> AsyncIterator[bytes]:
    if blob is None:
        zeros = bytes(CHUNK)
        sent = 0
        while sent < limit:
            n = min(CHUNK, limit - sent)
            yield zeros[:n]
            sent += n
        return
    fh: IO[bytes] = await anyio.to_thread.run_sync(blob.open, "rb", limiter=core.io_limiter)
    try:
        sent = 0
        while sent < limit:
            chunk = await anyio.to_thread.run_sync(
                fh.read, min(CHUNK, limit - sent), limiter=core.io_limiter
            )
            if not chunk:
                return
            sent += len(chunk)
            yield chunk
    finally:
        await anyio.to_thread.run_sync(fh.close, limiter=core.io_limiter)


# state route --------------------------------------------------------------------------------


def _loopback_only(request: web.Request) -> None:
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise web.HTTPForbidden(
            text='{"error": "the emulator state is only served to loopback peers"}',
            content_type="application/json",
        )


async def state(request: web.Request) -> web.Response:
    _loopback_only(request)
    return web.json_response(core_of(request).snapshot())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_put("/_upload/{token}", put_upload, name="put")
    r.add_get("/_download/{batch_id}/{item_id}", download, name="download")
    r.add_get("/_emulator/state", state, name="emulator_state")
