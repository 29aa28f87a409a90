"""Asynchronous ingest: tar shards after their PUT, and reference (URL) ingests.

Webhooks (section 9 of the contract): a tar shard whose ``notification_config.json`` names a
``notificationsURL`` gets, once ingested, one ``files-status`` payload (its shard id, the files
ingested and failed) and one ``ingest-status`` payload (``shard_id`` null). Categories cannot be
chosen for tars, so both are sent. A references ingest sends the categories it asked for
(default ``ingest-status``): ``files-status`` once per shard, ``ingest-status`` once at the end.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import anyio

from rfbatch.emulator.model import Batch, FailedItem, Shard, is_image_name, utcnow
from rfbatch.emulator.pipe import coalesced, feed_thread
from rfbatch.emulator.sinks import Blob, TarResult, TooLargeError, store_blob

if TYPE_CHECKING:
    from rfbatch.emulator.core import EmulatorCore

SHARD_QUEUED = ("references-ingest-queued", "info")

REFERENCES_PER_SHARD = 500
_FETCH_CONCURRENCY = 8
_MAX_LISTED = 1000
_LOCAL_HOSTS = frozenset({"localhost"})


async def unlink_quietly(core: EmulatorCore, *paths: Path | None) -> None:
    real = [p for p in paths if p is not None]
    if not real:
        return

    def _unlink() -> None:
        for p in real:
            p.unlink(missing_ok=True)

    await anyio.to_thread.run_sync(_unlink, limiter=core.io_limiter)


# tar shards ---------------------------------------------------------------------------------


def mark_shard_received(batch: Batch, shard_id: str, size: int) -> None:
    name, kind = batch.vocabulary.received
    batch.add_shard(Shard(shard_id, name, kind, utcnow(), 0, {"receivedBytes": size}))


async def ingest_tar_later(
    core: EmulatorCore, batch_id: str, shard_id: str, res: TarResult
) -> None:
    """Commit a received shard after ``ingest_delay``, as the real indexer does in background."""
    if core.config.ingest_delay > 0:
        await asyncio.sleep(core.config.ingest_delay)
    await commit_tar(core, batch_id, shard_id, res)


async def commit_tar(core: EmulatorCore, batch_id: str, shard_id: str, res: TarResult) -> None:
    batch = core.store.get(batch_id)
    if batch is None:
        await unlink_quietly(core, *(m.blob.path for m in res.members))
        return
    now = utcnow()
    if res.error is not None:
        name, kind = batch.vocabulary.failed
        batch.add_shard(Shard(shard_id, name, kind, now, 0, {"reason": res.error}))
    else:
        stale: list[Path | None] = []
        for member in res.members:
            _, old = batch.put_item(
                name=member.name,
                size=member.blob.size,
                sha256=member.blob.sha256,
                blob=member.blob.path,
                shard_id=shard_id,
            )
            stale.append(old)
        for fname, reason in res.failed:
            batch.failed.append(FailedItem(fname, reason, shard_id))
        # No per-file figures in the metadata: the real service documents none.
        name, kind = batch.vocabulary.partial if res.failed else batch.vocabulary.ingested
        batch.add_shard(Shard(shard_id, name, kind, now, len(res.members)))
        await unlink_quietly(core, *stale)
    config = res.notification or {}
    url = config.get("notificationsURL")
    if isinstance(url, str) and url:
        ingest_id = str(config.get("ingestId") or uuid.uuid4())
        ingested = [m.name for m in res.members] if res.error is None else []
        failed = [{"type": reason, "file_name": n, "reason": reason} for n, reason in res.failed]
        _send_files_status(core, url, ingest_id, batch_id, shard_id, ingested, failed, res.error)
        _send_ingest_status(core, url, ingest_id, batch_id, res.error)


def _send_files_status(
    core: EmulatorCore,
    url: str,
    ingest_id: str,
    batch_id: str,
    shard_id: str,
    ingested: list[str],
    failed: list[dict[str, str]],
    error: str | None,
) -> None:
    truncated = len(ingested) > _MAX_LISTED or len(failed) > _MAX_LISTED
    core.webhooks.send(
        url,
        {
            "type": "roboflow-data-staging-notification-v1",
            "ingest_id": ingest_id,
            "batch_id": batch_id,
            "shard_id": shard_id,
            "notification": {
                "type": "ingest-files-status-notification-v1",
                "success": error is None and not failed,
                "ingested_files": ingested[:_MAX_LISTED],
                "failed_files": failed[:_MAX_LISTED],
                "content_truncated": truncated,
            },
        },
    )


def _send_ingest_status(
    core: EmulatorCore,
    url: str,
    ingest_id: str,
    batch_id: str,
    error: str | None,
    error_type: str = "ingest-failed",
) -> None:
    notification: dict[str, Any] = {
        "type": "ingest-status-notification-v1",
        "success": error is None,
    }
    if error is not None:
        notification["error_details"] = {"type": error_type, "reason": error}
    core.webhooks.send(
        url,
        {
            "type": "roboflow-data-staging-notification-v1",
            "ingest_id": ingest_id,
            "batch_id": batch_id,
            "shard_id": None,
            "notification": notification,
        },
    )


# references ---------------------------------------------------------------------------------


@dataclass
class ReferencesIngest:
    batch_id: str
    ingest_id: str
    kind: str  # "image" | "video"
    references: list[dict[str, str]] | None
    references_url: str | None
    shard_ids: list[str]
    notifications_url: str | None
    categories: list[str] = field(default_factory=lambda: ["ingest-status"])


def is_local_url(url: str) -> bool:
    """Only loopback sources are fetched: the emulator must never reach the internet."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host.lower() in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plan_shards(count: int) -> list[str]:
    shards = max(1, -(-count // REFERENCES_PER_SHARD))
    return [uuid.uuid4().hex for _ in range(shards)]


async def run_references_ingest(core: EmulatorCore, job: ReferencesIngest) -> None:
    batch = core.store.get(job.batch_id)
    if batch is None:
        return
    refs = job.references
    if refs is None:
        assert job.references_url is not None
        try:
            refs = await _fetch_reference_list(core, job.references_url)
        except _UnsafeUrlError as exc:
            _fail_whole_ingest(core, batch, job, "unsafe-url-detected", str(exc))
            return
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            _fail_whole_ingest(core, batch, job, "references-file-unreadable", type(exc).__name__)
            return
        job.shard_ids = plan_shards(len(refs))
        for shard_id in job.shard_ids:
            batch.add_shard(Shard(shard_id, *SHARD_QUEUED, utcnow()))
    if core.config.ingest_delay > 0:
        await asyncio.sleep(core.config.ingest_delay)
    first_error: tuple[str, str] | None = None
    sem = asyncio.Semaphore(_FETCH_CONCURRENCY)
    for index, shard_id in enumerate(job.shard_ids):
        chunk = refs[index * REFERENCES_PER_SHARD : (index + 1) * REFERENCES_PER_SHARD]
        outcomes = await asyncio.gather(*(_fetch_one(core, job, ref, sem) for ref in chunk))
        ingested: list[str] = []
        failed: list[dict[str, str]] = []
        stale: list[Path | None] = []
        for ref, outcome in zip(chunk, outcomes, strict=True):
            name = ref["name"]
            if isinstance(outcome, Blob):
                _, old = batch.put_item(
                    name=name,
                    size=outcome.size,
                    sha256=outcome.sha256,
                    blob=outcome.path,
                    shard_id=shard_id,
                )
                stale.append(old)
                ingested.append(name)
            else:
                failed.append({"type": outcome[0], "file_name": name, "reason": outcome[1]})
                batch.failed.append(FailedItem(name, outcome[0], shard_id))
                first_error = first_error or outcome
        await unlink_quietly(core, *stale)
        words = batch.vocabulary
        pair = words.partial if failed and ingested else words.failed if failed else words.ingested
        batch.add_shard(Shard(shard_id, *pair, utcnow(), len(ingested)))
        if job.notifications_url and "files-status" in job.categories:
            _send_files_status(
                core,
                job.notifications_url,
                job.ingest_id,
                job.batch_id,
                shard_id,
                ingested,
                failed,
                None,
            )
    if job.notifications_url and "ingest-status" in job.categories:
        if first_error is not None:
            _send_ingest_status(
                core,
                job.notifications_url,
                job.ingest_id,
                job.batch_id,
                first_error[1],
                first_error[0],
            )
        else:
            _send_ingest_status(core, job.notifications_url, job.ingest_id, job.batch_id, None)


def _fail_whole_ingest(
    core: EmulatorCore, batch: Batch, job: ReferencesIngest, error_type: str, reason: str
) -> None:
    shard_id = uuid.uuid4().hex
    job.shard_ids = [shard_id]
    batch.add_shard(
        Shard(
            shard_id,
            *batch.vocabulary.failed,
            utcnow(),
            0,
            {"reason": error_type, "details": reason},
        )
    )
    if job.notifications_url and "ingest-status" in job.categories:
        _send_ingest_status(
            core, job.notifications_url, job.ingest_id, job.batch_id, reason, error_type
        )


class _UnsafeUrlError(Exception):
    pass


async def _fetch_reference_list(core: EmulatorCore, url: str) -> list[dict[str, str]]:
    if not is_local_url(url):
        raise _UnsafeUrlError("references file URL is not on a trusted host")
    async with core.session.get(url) as resp:
        resp.raise_for_status()
        text = await resp.text()
    refs: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("url"), str)
        ):
            raise ValueError("each line must be {name, url}")
        refs.append({"name": entry["name"], "url": entry["url"]})
    return refs


async def _fetch_one(
    core: EmulatorCore, job: ReferencesIngest, ref: dict[str, str], sem: asyncio.Semaphore
) -> Blob | tuple[str, str]:
    name, url = ref["name"], ref["url"]
    if not is_local_url(url):
        return ("unsafe-url-detected", "URL does not point to a trusted host")
    if job.kind == "image" and not is_image_name(name):
        return ("unsupported-file-type", "not an image file name")
    limit = core.config.max_image_bytes if job.kind == "image" else None
    async with sem:
        try:
            async with core.session.get(url) as resp:
                if resp.status != 200:
                    return ("file-download-failed", f"source answered HTTP {resp.status}")
                if limit is not None and (resp.content_length or 0) > limit:
                    return ("file-size-limit-exceeded", f"file is over {limit} bytes")
                blob_dir = core.blob_dir

                def consume(reader: Any) -> Blob:
                    return store_blob(reader, blob_dir, limit)

                return await feed_thread(_body(resp.content), consume, limiter=core.pipe_limiter)
        except TooLargeError:
            return ("file-size-limit-exceeded", f"file is over {limit} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ("file-download-failed", type(exc).__name__)


async def _body(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    async for chunk in coalesced(content):
        yield chunk
