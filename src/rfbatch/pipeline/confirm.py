"""Ingest confirmation: wait until the service's count holds what this batch was sent.

Bulk uploads are indexed in the background, so a 2xx on the PUT is not yet an ingested file. The
count endpoint is polled until it reaches the number of distinct member names the manifest has
sent to the batch (over all runs, since counts accumulate), less the files the service reported
as failed in its shard status rows. Only then are the files marked ``ingested``.

With a webhook receiver, the batch's ingest notifications cut each pause short, and the files
they name as failed (with the service's reasons) say which files were rejected without walking
the batch's listing. Counts are still read from the API: a notification only says "look again".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog

from rfbatch.api import RoboflowClient
from rfbatch.state.ledger import Ledger

if TYPE_CHECKING:  # the receiver brings aiohttp's server, which a one-shot upload never needs
    from rfbatch.webhooks import IngestReport, WebhookReceiver

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


async def expected_count(manifest: Ledger, batch_id: str) -> int:
    """Files this batch was sent (each under its own member name), over every run."""
    counts = await manifest.counts(batch_id)
    return counts["uploaded"] + counts["ingested"]


async def _mark_ingested(manifest: Ledger, batch_id: str) -> None:
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


def _reported_reasons(report: IngestReport | None) -> dict[str, str]:
    """The reasons the ingest notifications gave, by member name (empty when they were cut)."""
    if report is None or report.content_truncated:
        return {}
    return {f.file_name: f.reason or f.type for f in report.failed_files if f.file_name}


async def _name_failures(
    client: RoboflowClient,
    manifest: Ledger,
    batch_id: str,
    failed: int,
    status: str,
    report: IngestReport | None,
) -> list[tuple[Path, str]]:
    """Which sent files the service did not keep.

    The ingest notifications name them, with a reason each; when they do not name all
    ``failed`` files (no receiver, a lost or truncated notification), the batch's listing is the
    one place that names what was ingested, and every sent file missing from it was rejected.
    """
    reported = _reported_reasons(report)
    missing: list[tuple[Path, str]] = []
    if reported:
        missing = [
            (row.path, f"rejected by the service at ingest ({why})")
            async for row in manifest.files_in_state(["uploaded"], batch_id)
            if (why := reported.get(row.member_name or ""))
        ]
    if len(missing) < failed:
        present = {f.file_name async for f in client.list_files(batch_id)}
        reason = f"rejected by the service at ingest ({status or 'shard error'})"
        missing = [
            (row.path, reason)
            async for row in manifest.files_in_state(["uploaded"], batch_id)
            if row.member_name is not None and row.member_name not in present
        ]
    # The service will refuse the same bytes again: like a local skip, the file is not sent
    # again until it changes. This run still reports it as failed.
    by_reason: dict[str, list[Path]] = {}
    for path, why in missing:
        by_reason.setdefault(why, []).append(path)
    for why, paths in by_reason.items():
        await manifest.mark(paths, "skipped", error=why)
    for path, why in missing:
        log.warning("upload.rejected", batch=batch_id, path=str(path), reason=why)
    return missing


async def confirm_ingest(
    client: RoboflowClient,
    manifest: Ledger,
    batch_id: str,
    *,
    deadline_seconds: float,
    poll_interval: float,
    receiver: WebhookReceiver | None = None,
) -> Confirmation:
    """Poll until the batch holds what it was sent (less what the service rejected), or until
    ``deadline_seconds``; a ``receiver`` wakes each pause early on the batch's notifications."""
    started = time.monotonic()
    expected = await expected_count(manifest, batch_id)
    waker = receiver.ingest_waker(batch_id) if receiver is not None else None
    count = failed = 0
    status = ""
    rejected: list[tuple[Path, str]] = []
    while True:
        count = await client.count(batch_id)
        if count < expected:
            failed, status = await _failed_by_service(client, batch_id)
        if count + failed >= expected:
            if failed:
                report = receiver.ingest_report(batch_id) if receiver is not None else None
                rejected = await _name_failures(client, manifest, batch_id, failed, status, report)
            await _mark_ingested(manifest, batch_id)
            break
        left = deadline_seconds - (time.monotonic() - started)
        if left <= 0:
            break
        if waker is None:
            await anyio.sleep(min(poll_interval, left))
        else:
            await waker.wait_for(min(poll_interval, left))
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
