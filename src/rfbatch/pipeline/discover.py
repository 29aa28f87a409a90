"""Discovery stages: drop what the manifest already has, record skips, route by kind.

``select_new`` asks the manifest about files a chunk at a time (one transaction per chunk
of the walk), which is what keeps a no-op rescan of a large tree fast. ``route`` runs after
settling, so the size it checks is the final one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.media import FoundFile, Skipped, SkipReason
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import Assigned, BatchAssigner, InFlight
from rfbatch.state.ledger import Ledger

log = structlog.get_logger("rfbatch.discover")


async def select_new(
    receive: MemoryObjectReceiveStream[list[FoundFile]],
    send: MemoryObjectSendStream[FoundFile],
    manifest: Ledger,
    tally: Tally,
    in_flight: InFlight,
    batch_of: Callable[[FoundFile], str] | None = None,
    refusal: Callable[[FoundFile], Skipped | None] | None = None,
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Pass on only the files that are new or changed since the manifest last saw them.

    Files arrive in chunks (a scan's walk hands on a thousand at a time), and each chunk is
    checked against the manifest in one call: a no-op rescan costs a few steps per thousand
    files here, and nothing per file but the manifest's own comparison.

    ``room``, when given, is awaited before each chunk is claimed from the ledger: a worker of a
    fleet claims files only as fast as it can send them, leaving the rest to its peers.

    A file already on its way (a watcher event and a rescan can both report it) is dropped
    here, before the manifest is asked, so it is never packed twice. A one-shot run (not
    ``tally.new_only``) reports every file of its tree that ``refusal`` refuses, also one an
    earlier run already refused: each run says what it did not send (see :class:`Tally`).
    """
    async with receive, send:
        async for chunk in receive:
            batch = [f for f in chunk if f.location not in in_flight] if in_flight.total else chunk
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
    refused = [(file, why) for file in batch if (why := refusal(file)) is not None]
    if not refused:
        return batch  # the common case: nothing built but the check
    for _, why in refused:
        await _skip(why, manifest, tally)
    gone = {id(file) for file, _ in refused}
    return [file for file in batch if id(file) not in gone]


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
