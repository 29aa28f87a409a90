"""Ingest confirmation: wait until the service's count holds what this batch was sent.

Bulk uploads are indexed in the background, so a 2xx on the PUT is not yet an ingested file. The
count endpoint is polled until it reaches the number of distinct member names the manifest has
sent to the batch (over all runs, since counts accumulate), less the files the service reported
as failed in its shard status rows. Only then are the files marked ``ingested``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import structlog

from rfbatch.api import RoboflowClient
from rfbatch.state.manifest import SqliteManifest

log = structlog.get_logger("rfbatch.confirm")


@dataclass
class Confirmation:
    batch_id: str
    expected: int
    count: int
    failed_by_service: int
    confirmed: bool
    seconds: float


async def expected_count(manifest: SqliteManifest, batch_id: str) -> int:
    """Files this batch was sent (each under its own member name), over every run."""
    counts = await manifest.counts(batch_id)
    return counts["uploaded"] + counts["ingested"]


async def _mark_ingested(manifest: SqliteManifest, batch_id: str) -> None:
    paths = [row.path async for row in manifest.files_in_state(["uploaded"], batch_id)]
    await manifest.mark(paths, "ingested")


async def _failed_by_service(client: RoboflowClient, batch_id: str) -> int:
    failed = 0
    async for shard in client.list_shards(batch_id):
        meta = shard.status_metadata or {}
        value = meta.get("failedFiles", meta.get("failed_files", 0))
        if isinstance(value, int):
            failed += value
        elif isinstance(value, list):
            failed += len(value)
    return failed


async def confirm_ingest(
    client: RoboflowClient,
    manifest: SqliteManifest,
    batch_id: str,
    *,
    deadline_seconds: float,
    poll_interval: float,
    check_shards: bool = True,
) -> Confirmation:
    started = time.monotonic()
    expected = await expected_count(manifest, batch_id)
    count = failed = 0
    while True:
        count = await client.count(batch_id)
        if check_shards and count < expected:
            failed = await _failed_by_service(client, batch_id)
        if count + failed >= expected:
            await _mark_ingested(manifest, batch_id)
            break
        if time.monotonic() - started >= deadline_seconds:
            break
        await anyio.sleep(poll_interval)
    result = Confirmation(
        batch_id=batch_id,
        expected=expected,
        count=count,
        failed_by_service=failed,
        confirmed=count + failed >= expected,
        seconds=round(time.monotonic() - started, 3),
    )
    event = log.info if result.confirmed else log.warning
    event(
        "upload.confirm",
        batch=batch_id,
        expected=expected,
        count=count,
        failed=failed,
        confirmed=result.confirmed,
        seconds=result.seconds,
    )
    return result
