"""Ingest confirmation: wait until the service's count holds what this batch was sent.

Bulk uploads are indexed in the background, so a 2xx on the PUT is not yet an ingested file. The
count endpoint is polled until it reaches the number of distinct member names the manifest has
sent to the batch (over all runs, since counts accumulate), less the files the service reported
as failed in its shard status rows. Only then are the files marked ``ingested``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

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
    failed_files: list[tuple[Path, str]] = field(default_factory=list)


async def expected_count(manifest: SqliteManifest, batch_id: str) -> int:
    """Files this batch was sent (each under its own member name), over every run."""
    counts = await manifest.counts(batch_id)
    return counts["uploaded"] + counts["ingested"]


async def _mark_ingested(manifest: SqliteManifest, batch_id: str) -> None:
    await manifest.move_state(["uploaded"], "ingested", batch_id=batch_id)


async def _failed_by_service(client: RoboflowClient, batch_id: str) -> tuple[int, str]:
    """How many files the shard status rows say failed, and their status names."""
    failed = 0
    names: set[str] = set()
    async for shard in client.list_shards(batch_id):
        meta = shard.status_metadata or {}
        value = meta.get("failedFiles", meta.get("failed_files", 0))
        if isinstance(value, int):
            failed += value
        elif isinstance(value, list):
            failed += len(value)
        if shard.failed or value:
            names.add(shard.status_name)
    return failed, ", ".join(sorted(names))


async def _name_failures(
    client: RoboflowClient, manifest: SqliteManifest, batch_id: str, status: str
) -> list[tuple[Path, str]]:
    """Which sent files the service did not keep: those missing from the batch's listing.

    Shard status rows give only counts, so the listing is the one place that names what was
    ingested; it is walked only when some shard reported failures.
    """
    present = {f.file_name async for f in client.list_files(batch_id)}
    reason = f"rejected by the service at ingest ({status or 'shard error'})"
    missing = [
        (row.path, reason)
        async for row in manifest.files_in_state(["uploaded"], batch_id)
        if row.member_name is not None and row.member_name not in present
    ]
    if missing:
        # The service will refuse the same bytes again: like a local skip, the file is not
        # sent again until it changes. This run still reports it as failed.
        await manifest.mark([p for p, _ in missing], "skipped", error=reason)
    for path, _ in missing:
        log.warning("upload.rejected", batch=batch_id, path=str(path), reason=reason)
    return missing


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
    status = ""
    rejected: list[tuple[Path, str]] = []
    while True:
        count = await client.count(batch_id)
        if check_shards and count < expected:
            failed, status = await _failed_by_service(client, batch_id)
        if count + failed >= expected:
            if failed:
                rejected = await _name_failures(client, manifest, batch_id, status)
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
        failed_files=rejected,
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
