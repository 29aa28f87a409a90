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

- the count has not moved for the settle time (``[upload] ingest_settle_seconds``, 15 s, or
  ``SETTLE_POLLS`` polls if longer): a
  shard being indexed moves it; and
- the batch has at least one shard row per shard rfbatch sent to it, and every row looks
  processed. Status words are never read. A row may appear when its shard is received and
  change (its status, its ``eventTimestamp``, its ``shardObjectsCount``) when it is indexed, so
  a row counts once it has changed since rfbatch first saw it, or appeared already counting
  objects (or with a ``statusType`` naming an error: a failed shard, as the contract says), and
  then held still for the settle time; any other row counts ``ROW_FLOOR_SECONDS`` (40 s) after
  it was first seen. So a shard that takes longer than the settle time to index is waited for,
  not taken for one whose files were rejected.

Or, sooner, when the ingest notifications name enough failed files to account for the gap.
Then the listing is walked and every sent file missing from it is named: with the service's
reason when a notification gave one, else "not in the batch after ingest". If the listing holds
every sent file (the count lagged), polling goes on. A rejected file is so named one settle
time after its shard is processed, 40 s at most (at once with notifications): within a minute
with the defaults.

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

# The settle time is at least this many polls (``[upload] ingest_settle_seconds`` says how long).
SETTLE_POLLS = 3
# A shard row that shows no sign of being processed is taken as processed this long after rfbatch
# first saw it: at least ROW_FLOOR_SECONDS, and this many settle times.
ROW_FLOOR_SECONDS = 40.0
ROW_FLOOR_SETTLES = 8 / 3
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


@dataclass
class _Row:
    fingerprint: tuple[object, ...]
    first_seen: float
    changed_at: float | None = None
    settled_looking: bool = False
    """It counted objects, or its ``statusType`` names an error (a failed shard, as documented)."""


@dataclass
class ShardWatch:
    """What each shard row looked like when first seen, and when it last changed."""

    rows: dict[str, _Row] = field(default_factory=dict)

    async def observe(self, client: RoboflowClient, batch_id: str, now: float) -> None:
        try:
            async for shard in client.list_shards(batch_id):
                seen = (
                    shard.status_name,
                    shard.status_type,
                    shard.event_timestamp,
                    shard.shard_objects_count,
                    repr(shard.status_metadata),
                )
                row = self.rows.get(shard.shard_id)
                if row is None:
                    row = self.rows[shard.shard_id] = _Row(seen, now)
                elif seen != row.fingerprint:
                    row.fingerprint, row.changed_at = seen, now
                row.settled_looking = shard.shard_objects_count > 0 or shard.failed
        except NotFoundError:
            return  # the batch appears once its first shard is processed

    def processed(self, sent: int, settle: float, now: float) -> bool:
        """A row per shard sent, each held still for the settle time since it changed or, never
        seen to change, since it appeared counting objects (or failed); any row once it has
        been listed for the floor time."""
        if len(self.rows) < sent:
            return False
        floor = max(ROW_FLOOR_SECONDS, ROW_FLOOR_SETTLES * settle)
        for row in self.rows.values():
            still = now - (row.changed_at or row.first_seen) >= settle
            evidence = row.changed_at is not None or row.settled_looking
            if not (still and evidence) and now - row.first_seen < floor:
                return False
        return True


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
    try:
        async for page in client.list_file_pages(batch_id):
            kept.update(f.file_name for f in page.items)
    except NotFoundError:
        pass  # a batch whose every file was rejected may never come to exist

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
    settle_seconds: float = 15.0,
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
    settle = max(settle_seconds, SETTLE_POLLS * poll_interval)
    count, last, moved_at = 0, -1, started
    rejected: list[tuple[Path, str]] = []
    confirmed = False
    shards = ShardWatch()
    sent = len(await manifest.list_shards(batch_id=batch_id, states=["uploaded", "ingested"]))
    while True:
        count = await _count(client, batch_id)
        if on_count is not None:
            on_count(count, expected)
        if count >= expected:
            confirmed = True
        else:
            now = time.monotonic()
            if count != last:
                last, moved_at = count, now
            report = receiver.ingest_report(batch_id) if receiver is not None else None
            reasons = _reported_reasons(report)
            # Rows are watched on every poll while the count is short: a change is only seen
            # by looking before and after it.
            await shards.observe(client, batch_id, now)
            over = count + len(reasons) >= expected or (
                now - moved_at >= settle and shards.processed(sent, settle, now)
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
