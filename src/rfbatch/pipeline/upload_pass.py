"""One pass of the ingest flow over finite sources: scan → select → settle → route → pack → PUT.

Every arrow is a bounded memory object stream, so a slow PUT blocks the packer, which blocks the
settler, which blocks the scanner: memory is bounded by the stream sizes and worker counts, not
by the number of files. Each stage closes its output when its input ends, so the pass drains and
the task group returns. A file that changed while it was being sent goes back to ``seen``; the
pass is then repeated (a bounded number of times) to take it once it is quiet.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from rfbatch.app import Services
from rfbatch.errors import UnresumableRowError
from rfbatch.localfs.reading import still_as_recorded
from rfbatch.localfs.scan import scan
from rfbatch.localfs.settle import Settler, settle_files
from rfbatch.media import FoundFile, Skipped, SourceSpec, normalize_extensions
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import Assigned, BatchAssigner, FixedBatches, InFlight
from rfbatch.pipeline.confirm import Confirmation, expected_count
from rfbatch.pipeline.discover import record_skips, refusal, route, select_new
from rfbatch.pipeline.lifecycle import Lifecycle
from rfbatch.pipeline.pack import Shard, pack_shards
from rfbatch.pipeline.upload import Uploader, UploadOptions
from rfbatch.settings import Settings
from rfbatch.state.fleet import Fleet
from rfbatch.state.ledger import Ledger
from rfbatch.state.records import BatchKind, BatchState, FileRow

if TYPE_CHECKING:  # the receiver brings aiohttp's server, which a one-shot upload never needs
    from rfbatch.webhooks import WebhookReceiver

STREAM_DEPTH = 1024
# The source hands files on in chunks (a scan's: up to a thousand): two queued keep the walk
# and the manifest check busy together, and memory near what STREAM_DEPTH files took.
FOUND_CHUNKS = 2
MAX_PASSES = 4


@dataclass
class PassResult:
    tally: Tally
    confirmations: list[Confirmation] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    """The batches sealed after the passes: those sent files, in this run or an earlier one."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each phase: ``upload`` (scan, settle, send) and ``confirm``."""
    extensions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The extensions sent, by kind (``image``, ``video``): what a report says was looked for."""

    @property
    def complete(self) -> bool:
        """Everything found was sent and confirmed, and nothing was skipped or failed."""
        return (
            not self.tally.failed_count
            and not self.tally.skipped_count
            and all(c.confirmed for c in self.confirmations)
        )


def upload_options(
    settings: Settings, display_name: str | None = None, *, ingest_webhook_url: str | None = None
) -> UploadOptions:
    """Options from settings; ``ingest_webhook_url`` (a receiver's public URL) asks the service
    to notify it of each shard's ingest, in place of ``[upload] ingest_webhook_url``."""
    return UploadOptions(
        display_name=display_name,
        ingest_webhook_url=ingest_webhook_url or settings.upload.ingest_webhook_url,
        chunk_bytes=settings.upload.chunk_bytes,
        max_in_flight_bytes=settings.upload.max_in_flight_bytes,
    )


def source_specs(services: Services, roots: Sequence[str]) -> list[SourceSpec]:
    return scan_specs(services.settings, roots)


def scan_specs(settings: Settings, roots: Sequence[str]) -> list[SourceSpec]:
    """The ``[scan]`` rules applied to each root (no service needed: a dry run has none)."""
    scan_cfg = settings.scan
    return [
        SourceSpec(
            root=Path(root),
            include=scan_cfg.include,
            exclude=scan_cfg.exclude,
            image_extensions=frozenset(scan_cfg.image_extensions),
            video_extensions=frozenset(scan_cfg.video_extensions),
            ignore_names=scan_cfg.ignore_names,
            min_age_seconds=scan_cfg.min_age_seconds,
            max_size=scan_cfg.max_size_bytes,
            follow_symlinks=scan_cfg.follow_symlinks,
        )
        for root in roots
    ]


Source = Callable[
    [MemoryObjectSendStream[list[FoundFile]], MemoryObjectSendStream[Skipped]],
    Coroutine[Any, Any, None],
]
"""Sends files found, a chunk (a list) at a time, and the files it cannot take; then closes
both streams (a finite source) or runs until cancelled (the daemon's watcher)."""


def scan_source(specs: Sequence[SourceSpec], tally: Tally) -> Source:
    """A finite source: one scan of ``specs``; it closes both streams when done, and tells
    ``tally`` how many files it passed over (each pass sees the whole tree again)."""

    async def run(
        found: MemoryObjectSendStream[list[FoundFile]], skipped: MemoryObjectSendStream[Skipped]
    ) -> None:
        stats = await scan(specs, found, skipped=skipped)
        tally.ignored = stats.ignored
        tally.ignored_by_name = stats.ignored_by_name

    return run


async def run_intake(
    services: Services,
    source: Source,
    *,
    batches: BatchAssigner,
    options: UploadOptions,
    tally: Tally,
    in_flight: InFlight,
    linger: float | None = None,
    resume: Sequence[Assigned] = (),
) -> None:
    """Wire source → select → settle → route → pack → upload workers, and run until drained.

    Every stage closes its output when its input ends, so a finite source drains the whole
    chain and this returns; an endless one (the daemon's watcher) runs until cancelled.
    ``resume`` (from :func:`resumable`, already claimed in ``in_flight``) goes straight to the
    packer and the video workers, each file to its own batch.
    """
    settings = services.settings
    cfg = settings.upload
    uploader = Uploader(
        services.client, services.transfer, services.manifest, options, tally, in_flight
    )
    found_tx, found_rx = anyio.create_memory_object_stream[list[FoundFile]](FOUND_CHUNKS)
    skip_tx, skip_rx = anyio.create_memory_object_stream[Skipped](STREAM_DEPTH)
    new_tx, new_rx = anyio.create_memory_object_stream[FoundFile](STREAM_DEPTH)
    settled_tx, settled_rx = anyio.create_memory_object_stream[FoundFile](STREAM_DEPTH)
    image_tx, image_rx = anyio.create_memory_object_stream[Assigned](cfg.shard_max_files)
    video_tx, video_rx = anyio.create_memory_object_stream[Assigned](cfg.video_workers)
    # One shard queued per worker: enough to keep every worker busy, never a pile of shards.
    shard_tx, shard_rx = anyio.create_memory_object_stream[Shard](cfg.shard_workers)
    settle_seconds = settings.scan.settle_seconds
    settler = Settler(settle_seconds, on_vanished=lambda p: in_flight.release([p]))
    tally.settling = lambda: settler.pending
    # Re-stat pending files a few times per settle period, so a quiet file waits little longer.
    poll = min(1.0, max(settle_seconds / 4, 0.05))
    manifest = services.manifest
    async with anyio.create_task_group() as tg:
        if resume:
            # Cloned before route() starts: it closes its own ends when its input ends.
            tg.start_soon(_send_resumed, resume, image_tx.clone(), video_tx.clone(), tally)
        tg.start_soon(source, found_tx, skip_tx)
        tg.start_soon(record_skips, skip_rx, manifest, tally)
        batch_of = batches.batch_of if isinstance(batches, FixedBatches) else None
        refused = partial(refusal, max_image_bytes=cfg.max_image_bytes)
        tg.start_soon(
            select_new,
            found_rx,
            new_tx,
            manifest,
            tally,
            in_flight,
            batch_of,
            refused,
            _claim_room(services, in_flight) if services.fleet.shared else None,
        )
        tg.start_soon(partial(settle_files, new_rx, settled_tx, settler, poll_interval=poll))
        tg.start_soon(
            partial(
                route,
                settled_rx,
                image_tx,
                video_tx,
                manifest,
                tally,
                max_image_bytes=cfg.max_image_bytes,
                batches=batches,
                in_flight=in_flight,
            )
        )
        tg.start_soon(
            partial(
                pack_shards,
                image_rx,
                shard_tx,
                max_files=cfg.shard_max_files,
                max_bytes=cfg.shard_max_bytes,
                linger=linger,
            )
        )
        async with shard_rx, video_rx:
            for _ in range(cfg.shard_workers):
                tg.start_soon(uploader.shard_worker, shard_rx.clone())
            for _ in range(cfg.video_workers):
                tg.start_soon(uploader.video_worker, video_rx.clone())


def _claim_room(services: Services, in_flight: InFlight) -> Callable[[], Awaitable[None]]:
    """How a worker of a fleet waits before claiming more files: until fewer are on their way
    than fill a shard for each PUT it may run now, and one more. Claimed beyond that, files would
    only queue here while a peer sits idle (and wait a lease to be adopted if this one died)."""
    shard_files = services.settings.upload.shard_max_files
    slots = services.transfer.put_slots

    async def room() -> None:
        puts = slots.limit if slots is not None else services.settings.upload.shard_workers
        await in_flight.wait_below(shard_files * (puts + 1))

    return room


async def release_in_flight(fleet: Fleet) -> list[FileRow]:
    """Put files that a run which died left ``packed``/``uploading`` back to ``seen``.

    Their PUT either never finished or finished unrecorded: sending them again is the only safe
    choice, and the copies the service may already hold are the bounded duplicates of a crash.
    On a shared ledger only a gone worker's files are taken (:meth:`Fleet.adopt`), never a live
    one's. The rows returned still name the batch each file was on its way to (see
    :func:`resumable`).
    """
    return await fleet.adopt()


async def resumable(
    released: Sequence[FileRow],
    specs: Sequence[SourceSpec],
    join: Callable[[str], Awaitable[bool]],
) -> list[Assigned]:
    """The released files to send again to the very batch a killed run was sending them to.

    Sent anywhere else, a file whose PUT reached the service just before the crash would sit in
    the old batch as well as the new one (processed twice, or stranding an otherwise empty
    batch); sent to the same batch under the same member name it simply replaces that copy.
    Only files whose batch still takes them (``join`` says so: see :meth:`Fleet.join`), that
    are unchanged on disk and that lie under a current source are resumed; the rest are found
    again by the scan like any other file.
    """
    roots = {spec.root for spec in specs}
    takes: dict[str, bool] = {}
    candidates: list[tuple[str, FoundFile]] = []
    for row in released:
        if row.batch_id is None or row.root not in roots:
            continue
        if row.batch_id not in takes:
            takes[row.batch_id] = await join(row.batch_id)
        if not takes[row.batch_id]:
            continue
        try:
            candidates.append((row.batch_id, row.to_found()))
        except UnresumableRowError:
            continue

    def unchanged() -> list[Assigned]:
        return [Assigned(batch, found) for batch, found in candidates if still_as_recorded(found)]

    return await anyio.to_thread.run_sync(unchanged)


async def _send_resumed(
    resume: Sequence[Assigned],
    images: MemoryObjectSendStream[Assigned],
    videos: MemoryObjectSendStream[Assigned],
    tally: Tally,
) -> None:
    async with images, videos:
        for item in resume:
            tally.queued += 1
            tally.queued_bytes += item.file.size
            await (images if item.file.kind == "image" else videos).send(item)


@dataclass(frozen=True)
class UploadTarget:
    """Where a one-shot upload sends images and videos."""

    image_batch: str
    video_batch: str
    options: UploadOptions = field(default_factory=UploadOptions)


# Batch states whose ingest has not been confirmed yet.
_UNCONFIRMED: frozenset[BatchState] = frozenset({"open", "sealed"})


async def upload_and_confirm(
    services: Services,
    specs: Sequence[SourceSpec],
    target: UploadTarget,
    *,
    tally: Tally | None = None,
    receiver: WebhookReceiver | None = None,
) -> PassResult:
    """Repeat passes until nothing was re-queued, then seal both batches and confirm their ingest.

    The batches are taken through the same steps as the daemon's (:class:`Lifecycle`), up to
    ``confirmed``; :func:`seal_batches` says where each one resumes. A ``receiver`` wakes the
    confirmation on the batches' ingest notifications and names rejected files with reasons.
    """
    scan_cfg = services.settings.scan
    result = PassResult(
        tally if tally is not None else Tally(),
        extensions={
            "image": tuple(sorted(normalize_extensions(scan_cfg.image_extensions))),
            "video": tuple(sorted(normalize_extensions(scan_cfg.video_extensions))),
        },
    )
    await release_in_flight(services.fleet)
    batches = FixedBatches(target.image_batch, target.video_batch)
    started = time.monotonic()
    for number in range(MAX_PASSES):
        # Later passes resend what was requeued; the tree was counted by the first.
        result.tally.repeat_pass = number > 0
        before = result.tally.requeued
        await run_intake(
            services,
            scan_source(specs, result.tally),
            batches=batches,
            options=target.options,
            tally=result.tally,
            in_flight=InFlight(),
        )
        if result.tally.requeued == before:
            break

    def confirmed(confirmation: Confirmation) -> None:
        for path, reason in confirmation.failed_files:
            result.tally.fail(str(path), reason)
        result.confirmations.append(confirmation)

    def counted(batch_id: str, count: int, expected: int) -> None:
        result.tally.ingest[batch_id] = (min(count, expected), expected)

    lifecycle = Lifecycle(
        services,
        InFlight(),
        receiver=receiver,
        on_confirmation=confirmed,
        on_ingest_count=counted,
    )
    result.phases["upload"] = time.monotonic() - started
    result.tally.phase = "confirm"
    started = time.monotonic()
    result.batches = await seal_batches(services.manifest, target)
    for batch_id in result.batches:
        await lifecycle.advance(batch_id, stop_at="confirmed")
    result.phases["confirm"] = time.monotonic() - started
    return result


async def seal_batches(manifest: Ledger, target: UploadTarget) -> list[str]:
    """Seal the target's batches that were sent files (in this run or an earlier one).

    A batch with files not yet confirmed goes back to ``sealed``, to be confirmed (again); one
    confirmed earlier and sent nothing since keeps the step it was recorded at. A batch whose
    every file was skipped or failed is left alone: there is nothing to confirm or process.
    """
    sealed = []
    kinds: tuple[tuple[str, BatchKind], ...] = (
        (target.image_batch, "images"),
        (target.video_batch, "videos"),
    )
    for batch_id, kind in kinds:
        expected = await expected_count(manifest, batch_id)
        if expected == 0:
            continue
        row = await manifest.get_batch(batch_id)
        if row is None:
            row = await manifest.create_batch(batch_id, kind)
        unconfirmed = (await manifest.counts(batch_id))["uploaded"] > 0
        if unconfirmed or row.state in _UNCONFIRMED or (row.state == "failed" and not row.job_id):
            await manifest.update_batch(batch_id, state="sealed", expected_count=expected)
        sealed.append(batch_id)
    return sealed
