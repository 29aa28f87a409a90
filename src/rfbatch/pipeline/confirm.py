"""Ingest confirmation, on what the service documents and nothing more.

Bulk uploads are indexed in the background, so a 2xx on the PUT is not yet an ingested file. The
documented signals are: the batch's ``count``; its listing (``/list``), the one place that names
what was kept; the ``files-status`` ingest notifications (with a receiver), whose
``failed_files`` name each rejected file with a reason; and shard rows, whose status names and
metadata are undocumented. So a shard row is read only as "this shard has been seen", never for
per-file figures.

The count reaching the number of member names the ledger has sent to the batch (over all runs,
since counts accumulate) confirms every file at once; this is the usual case and needs one call
per poll. When files are rejected the count stays short for good, so confirmation must decide
when ingest is over without knowing the service's vocabulary. It is taken as over when both:

- the count has not moved for ``SETTLE_SECONDS`` (or ``SETTLE_POLLS`` polls, if longer): a
  shard being indexed moves it, and the shard rows are not even listed while it moves. A row
  may appear when a shard is received, before it is indexed, and nothing vocabulary-free tells
  the two apart, so the pause covers the gap between one shard's indexing and the next; and
- the batch has at least one shard row per shard rfbatch sent to it (rows are counted, their
  vocabulary is not read).

Or, sooner, when the ingest notifications name enough failed files to account for the gap.
Then the listing is walked and every sent file missing from it is named: with the service's
reason when a notification gave one, else "not in the batch after ingest". If the listing holds
every sent file (the count lagged), polling goes on. A rejected file is so named about
``SETTLE_SECONDS`` after the last shard is processed (at once with notifications), well within
a minute with the default 2 s poll.

A new batch may not exist until its first shard is processed: a 404 from ``count`` or the shard
listing means "nothing ingested yet" and is waited through within the same deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog

from rfbatch.api import RoboflowClient
from rfbatch.errors import NotFoundError
from rfbatch.state.ledger import Ledger

if TYPE_CHECKING:  # the receiver brings aiohttp's server, which a one-shot upload never needs
    from rfbatch.webhooks import IngestReport, Waker, WebhookReceiver

log = structlog.get_logger("rfbatch.confirm")

# How long the count must hold still (with every shard seen) before a shortfall is final.
SETTLE_SECONDS = 15.0
SETTLE_POLLS = 3
NOT_KEPT = "not in the batch after ingest"


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


async def _count(client: RoboflowClient, batch_id: str) -> int:
    try:
        return await client.count(batch_id)
    except NotFoundError:
        return 0  # the batch appears once its first shard is processed


async def _every_shard_seen(client: RoboflowClient, manifest: Ledger, batch_id: str) -> bool:
    """At least one shard row per shard sent: counted, never interpreted."""
    sent = len(await manifest.list_shards(batch_id=batch_id, states=["uploaded", "ingested"]))
    rows = 0
    try:
        async for _ in client.list_shards(batch_id):
            rows += 1
            if rows >= sent:
                return True
    except NotFoundError:
        return False
    return rows >= sent


def _reported_reasons(report: IngestReport | None) -> dict[str, str]:
    """The reasons the ingest notifications gave, by member name (empty when they were cut)."""
    if report is None or report.content_truncated:
        return {}
    return {f.file_name: f.reason or f.type for f in report.failed_files if f.file_name}


async def _missing_files(
    client: RoboflowClient, manifest: Ledger, batch_id: str, reasons: dict[str, str]
) -> list[tuple[Path, str]]:
    """Sent files the listing does not hold, with the service's reason when it gave one.

    The listing is read a page at a time into a set of names only (no metadata kept); the
    ledger side is streamed.
    """
    kept: set[str] = set()
    async for page in client.list_file_pages(batch_id):
        kept.update(f.file_name for f in page.items)
    missing: list[tuple[Path, str]] = []
    async for row in manifest.files_in_state(["uploaded"], batch_id):
        if row.member_name is not None and row.member_name not in kept:
            why = reasons.get(row.member_name)
            missing.append((row.path, f"rejected by the service at ingest ({why or NOT_KEPT})"))
    return missing


async def _record_rejected(
    manifest: Ledger, batch_id: str, missing: list[tuple[Path, str]]
) -> None:
    # The service will refuse the same bytes again: like a local skip, the file is not sent
    # again until it changes. This run still reports it as failed.
    by_reason: dict[str, list[Path]] = {}
    for path, why in missing:
        by_reason.setdefault(why, []).append(path)
    for why, paths in by_reason.items():
        await manifest.mark(paths, "skipped", error=why)
    for path, why in missing:
        log.warning("upload.rejected", batch=batch_id, path=str(path), reason=why)


async def pause(waker: Waker | None, seconds: float) -> None:
    """The pause between two polls of an ingest: ``seconds``, cut short by the batch's next
    notification when a receiver gave a ``waker``."""
    if waker is None:
        await anyio.sleep(seconds)
    else:
        await waker.wait_for(seconds)


async def confirm_ingest(
    client: RoboflowClient,
    manifest: Ledger,
    batch_id: str,
    *,
    deadline_seconds: float,
    poll_interval: float,
    receiver: WebhookReceiver | None = None,
    on_count: Callable[[int, int], None] | None = None,
) -> Confirmation:
    """Poll until the batch holds what it was sent, or until ingest is over and the files it
    did not keep are named, or until ``deadline_seconds``; a ``receiver`` wakes each pause early
    on the batch's notifications and gives the service's reasons for rejected files.
    ``on_count`` hears each count read, with the number expected (a progress display)."""
    started = time.monotonic()
    expected = await expected_count(manifest, batch_id)
    waker = receiver.ingest_waker(batch_id) if receiver is not None else None
    settle = max(SETTLE_SECONDS, SETTLE_POLLS * poll_interval)
    count, last, moved_at = 0, -1, started
    rejected: list[tuple[Path, str]] = []
    confirmed = False
    while True:
        count = await _count(client, batch_id)
        if on_count is not None:
            on_count(count, expected)
        if count >= expected:
            confirmed = True
        else:
            if count != last:
                last, moved_at = count, time.monotonic()
            report = receiver.ingest_report(batch_id) if receiver is not None else None
            reasons = _reported_reasons(report)
            settled = time.monotonic() - moved_at >= settle
            over = count + len(reasons) >= expected or (
                settled and await _every_shard_seen(client, manifest, batch_id)
            )
            if over:
                rejected = await _missing_files(client, manifest, batch_id, reasons)
                confirmed = bool(rejected)
                moved_at = time.monotonic()  # an empty walk: the count lagged; settle again
        if confirmed:
            if rejected:
                await _record_rejected(manifest, batch_id, rejected)
            await manifest.move_state(["uploaded"], "ingested", batch_id=batch_id)
            break
        left = deadline_seconds - (time.monotonic() - started)
        if left <= 0:
            break
        await pause(waker, min(poll_interval, left))
    result = Confirmation(
        batch_id=batch_id,
        expected=expected,
        count=count,
        failed_by_service=len(rejected),
        confirmed=confirmed,
        seconds=round(time.monotonic() - started, 3),
        failed_files=rejected,
    )
    event = log.info if result.confirmed else log.warning
    event(
        "upload.confirm",
        batch=batch_id,
        expected=expected,
        count=count,
        failed=len(rejected),
        confirmed=result.confirmed,
        seconds=result.seconds,
    )
    return result
