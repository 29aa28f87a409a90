"""Discovery stages: drop what the manifest already has, record skips, route by kind.

``select_new`` asks the manifest about files in batches (one transaction per few hundred files),
which is what keeps a no-op rescan of a large tree fast. ``route`` runs after settling, so the
size it checks is the final one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.media import FoundFile, Skipped, SkipReason
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import Assigned, BatchAssigner, InFlight
from rfbatch.state.ledger import Ledger

log = structlog.get_logger("rfbatch.discover")

SELECT_BATCH = 512


async def next_batch(receive: MemoryObjectReceiveStream[FoundFile], limit: int) -> list[FoundFile]:
    """Wait for one file, then take whatever else is ready, up to ``limit``; [] at the end."""
    try:
        batch = [await receive.receive()]
    except anyio.EndOfStream:
        return []
    while len(batch) < limit:
        try:
            batch.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


async def select_new(
    receive: MemoryObjectReceiveStream[FoundFile],
    send: MemoryObjectSendStream[FoundFile],
    manifest: Ledger,
    tally: Tally,
    in_flight: InFlight,
    batch_of: Callable[[FoundFile], str] | None = None,
    refusal: Callable[[FoundFile], Skipped | None] | None = None,
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Pass on only the files that are new or changed since the manifest last saw them.

    ``room``, when given, is awaited before each chunk is claimed from the ledger: a worker of a
    fleet claims files only as fast as it can send them, leaving the rest to its peers.

    A file already on its way (a watcher event and a rescan can both report it) is dropped
    here, before the manifest is asked, so it is never packed twice. A one-shot run (not
    ``tally.new_only``) reports every file of its tree that ``refusal`` refuses, also one an
    earlier run already refused: each run says what it did not send (see :class:`Tally`).
    """
    async with receive, send:
        while batch := await next_batch(receive, SELECT_BATCH):
            batch = [f for f in batch if f.location not in in_flight]
            if not batch:
                continue
            counting = not tally.new_only and not tally.repeat_pass
            if counting:
                tally.found += len(batch)
                tally.found_bytes += sum(f.size for f in batch)
            if refusal is not None and not tally.new_only:
                batch = await _refuse(batch, refusal, manifest, tally)
            if room is not None:
                await room()
            fresh = await manifest.filter_new(batch, batch_of)
            if counting:
                tally.unchanged += len(batch) - len(fresh)
            if tally.new_only:
                tally.found += len(fresh)
                tally.found_bytes += sum(f.size for f in fresh)
            for file in fresh:
                if in_flight.claim(file.location):
                    await send.send(file)


async def _refuse(
    batch: list[FoundFile],
    refusal: Callable[[FoundFile], Skipped | None],
    manifest: Ledger,
    tally: Tally,
) -> list[FoundFile]:
    """Record and report the files ``refusal`` refuses; return the others."""
    kept: list[FoundFile] = []
    for file in batch:
        refused = refusal(file)
        if refused is None:
            kept.append(file)
        else:
            await _skip(refused, manifest, tally)
    return kept


async def _skip(item: Skipped, manifest: Ledger, tally: Tally) -> None:
    """Record a file that cannot be sent; count and log it once (see :class:`Tally`): in a
    one-shot run's first pass always, else only when the manifest did not have it so."""
    new = await manifest.record_skipped([item])
    if (tally.repeat_pass or tally.new_only) and not new:
        return
    reason = f"{item.reason}: {item.detail}" if item.detail else item.reason
    tally.skip(str(item.path), reason)
    log.warning("upload.skipped", path=str(item.path), reason=reason)


async def record_skips(
    receive: MemoryObjectReceiveStream[Skipped], manifest: Ledger, tally: Tally
) -> None:
    """Remember every file the scan could not take, with its reason."""
    async with receive:
        async for item in receive:
            await _skip(item, manifest, tally)


async def route(
    receive: MemoryObjectReceiveStream[FoundFile],
    images: MemoryObjectSendStream[Assigned],
    videos: MemoryObjectSendStream[Assigned],
    manifest: Ledger,
    tally: Tally,
    *,
    max_image_bytes: int,
    batches: BatchAssigner,
    in_flight: InFlight,
) -> None:
    """Give each settled file its batch and send it on; skip what cannot be sent."""
    async with receive, images, videos:
        async for file in receive:
            refused = refusal(file, max_image_bytes)
            if refused is not None:
                await _skip(refused, manifest, tally)
                in_flight.release([file.path])
                continue
            batch_id = await batches.batch_for(file)
            in_flight.assign(batch_id)
            tally.queued += 1
            tally.queued_bytes += file.size
            await (images if file.kind == "image" else videos).send(Assigned(batch_id, file))


def refusal(file: FoundFile, max_image_bytes: int) -> Skipped | None:
    """Why ``file`` cannot be sent as it is, or ``None``."""
    if file.size == 0:
        reason: SkipReason = "empty-file"
        detail = ""
    elif file.kind == "image" and file.size > max_image_bytes:
        reason = "too-large"
        detail = f"image of {file.size} bytes is over the {max_image_bytes}-byte limit"
    else:
        return None
    return Skipped(
        file.path, reason, detail, size=file.size, mtime_ns=file.mtime_ns, kind=file.kind
    )
