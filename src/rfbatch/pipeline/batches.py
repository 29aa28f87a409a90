"""Which batch a file goes to, and what is still on its way to each batch.

A one-shot upload sends everything to the batches it was given (:class:`FixedBatches`). The daemon
rotates (:class:`RotatingBatches`): a batch per kind per time window, closed early when it holds
``max_items``; ids are built from a prefix and the window start, so they are valid and sortable.
Images and videos never share a batch, and a batch is only ever filled by bulk (tar) uploads.

:class:`InFlight` counts, per batch, the files routed but not yet finished, and remembers which
paths are on their way, so a rescan that sees a file again does not send it twice.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio
import structlog

from rfbatch.ids import BATCH_ID_MAX
from rfbatch.media import FoundFile, MediaKind
from rfbatch.state.fleet import Fleet
from rfbatch.state.ledger import Ledger
from rfbatch.state.records import BatchKind

log = structlog.get_logger("rfbatch.batches")

KIND_OF: dict[MediaKind, BatchKind] = {"image": "images", "video": "videos"}
SUFFIX: dict[BatchKind, str] = {"images": "img", "videos": "vid"}


@dataclass(frozen=True, slots=True)
class Assigned:
    """A settled file and the batch it goes to."""

    batch_id: str
    file: FoundFile


class BatchAssigner(Protocol):
    async def batch_for(self, file: FoundFile) -> str: ...


@dataclass(frozen=True)
class FixedBatches:
    image_batch: str
    video_batch: str

    def batch_of(self, file: FoundFile) -> str:
        return self.image_batch if file.kind == "image" else self.video_batch

    async def batch_for(self, file: FoundFile) -> str:
        return self.batch_of(file)


StrPath = str | os.PathLike[str]


class InFlight:
    """Paths between discovery and a final state, and per-batch counts of them.

    Kept as strings: a rescan checks every file it finds against this set, and hashing a
    ``str`` is far cheaper than building and hashing a ``Path``.
    """

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._per_batch: Counter[str] = Counter()
        self._room: anyio.Event | None = None
        self._room_below = 0

    def __contains__(self, path: StrPath) -> bool:
        return os.fspath(path) in self._paths

    def claim(self, path: StrPath) -> bool:
        """True if ``path`` was not on its way yet (and now is)."""
        key = os.fspath(path)
        if key in self._paths:
            return False
        self._paths.add(key)
        return True

    def assign(self, batch_id: str) -> None:
        self._per_batch[batch_id] += 1

    def release(self, paths: Iterable[StrPath], batch_id: str | None = None) -> None:
        """``paths`` are no longer on their way; each takes one off ``batch_id``'s count."""
        keys = [os.fspath(path) for path in paths]
        self._paths.difference_update(keys)
        if batch_id is not None and (count := self._per_batch[batch_id]):
            if count > len(keys):
                self._per_batch[batch_id] = count - len(keys)
            else:
                del self._per_batch[batch_id]  # a daemon sees batches for months
        if self._room is not None and len(self._paths) < self._room_below:
            self._room.set()
            self._room = None

    async def wait_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` files are on their way (one waiter at a time)."""
        while len(self._paths) >= limit:
            self._room, self._room_below = anyio.Event(), limit
            await self._room.wait()

    def pending(self, batch_id: str) -> int:
        return self._per_batch[batch_id]

    @property
    def total(self) -> int:
        return len(self._paths)


def batch_id_for(prefix: str, kind: BatchKind, window_start: float, seq: int) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<img|vid>-<seq>``, always a valid id (at most 64 characters).

    A prefix of up to 40 characters fits with three-digit sequence numbers; past 999 batches in
    one window the prefix gives up the characters the longer number needs.
    """
    stamp = datetime.fromtimestamp(window_start, UTC).strftime("%Y%m%d-%H%M%S")
    tail = f"-{stamp}-{SUFFIX[kind]}-{seq:03d}"
    return prefix[: BATCH_ID_MAX - len(tail)] + tail


# Slots of a batch's item limit a worker reserves at a time: one ledger write per this many
# files, and at most this many of a batch's items stranded when a worker dies.
SLOT_CHUNK = 32


class RotatingBatches:
    """Opens, fills and seals batches by time window and item count (daemon mode).

    Batch ids follow from the window (prefix, window start, a sequence number), so every worker
    of a fleet fills the same open batch per window and kind: whoever finds it missing creates
    it, whoever finds the window over or the items all taken seals it, and the rest move on to
    the next when they find it sealed. The items are counted in the ledger (slots reserved
    :data:`SLOT_CHUNK` at a time), so the fleet as a whole keeps to ``max_items``. A worker joins
    a batch before routing a file to it and leaves once none of its files is on the way there
    (:meth:`release_idle`): the batch's lifecycle waits for every live filler.
    """

    def __init__(
        self,
        manifest: Ledger,
        fleet: Fleet,
        *,
        prefix: str,
        window_seconds: float,
        max_items: int,
        in_flight: InFlight,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manifest = manifest
        self.fleet = fleet
        self.prefix = prefix
        self.window_seconds = window_seconds
        self.max_items = max_items
        self.in_flight = in_flight
        self.clock = clock
        self._open: dict[BatchKind, _OpenBatch] = {}
        self._joined: set[str] = set()
        self._lock = anyio.Lock()

    async def load(self) -> None:
        """Pick up the batches left open (by an earlier run, or by the fleet)."""
        for row in await self.manifest.list_batches(states=["open"]):
            info = row.info or {}
            window_start = float(info.get("window_start", row.created_at))
            if row.kind in self._open or not await self.join(row.batch_id):
                continue
            self._open[row.kind] = _OpenBatch(row.batch_id, window_start)

    async def join(self, batch_id: str) -> bool:
        """Join ``batch_id`` as one of its fillers (resumed files go back to their batch)."""
        if batch_id in self._joined:
            return True
        if not await self.fleet.join(batch_id):
            return False
        self._joined.add(batch_id)
        return True

    async def batch_for(self, file: FoundFile) -> str:
        kind = KIND_OF[file.kind]
        async with self._lock:
            current = self._open.get(kind)
            if current is not None and not self._expired(current) and await self._slot(current):
                return current.batch_id
            if current is not None:
                await self._seal(kind, current)
            while True:
                opened = await self._open_new(kind)
                if await self._slot(opened):
                    return opened.batch_id
                await self._seal(kind, opened)  # filled by the fleet before this worker came

    async def _slot(self, batch: _OpenBatch) -> bool:
        """Take one of the batch's items, reserving more in the ledger when none is left."""
        if not batch.slots:
            batch.slots = await self.fleet.take_slots(batch.batch_id, SLOT_CHUNK, self.max_items)
        if not batch.slots:
            return False
        batch.slots -= 1
        batch.items += 1
        return True

    async def seal_expired(self) -> None:
        """Seal open batches whose window has passed, let go of those the fleet sealed, and
        leave batches this worker no longer sends to; called periodically by the daemon."""
        async with self._lock:
            for kind, current in list(self._open.items()):
                if self._expired(current):
                    await self._seal(kind, current)
                elif self.fleet.shared:
                    row = await self.manifest.get_batch(current.batch_id)
                    if row is None or row.state != "open":
                        self._open.pop(kind, None)  # sealed by another worker
            await self._seal_abandoned()
            await self.release_idle()

    async def _seal_abandoned(self) -> None:
        """Seal rotating batches of this prefix left open past their window by a worker that
        died (or an earlier run): nobody else has them open, and their files wait for a job."""
        mine = {b.batch_id for b in self._open.values()}
        for row in await self.manifest.list_batches(states=["open"]):
            start = row.info.get("window_start")
            if (
                row.batch_id in mine
                or not row.batch_id.startswith(f"{self.prefix[: BATCH_ID_MAX - 24]}-")
                or not isinstance(start, int | float)
            ):
                continue  # a one-shot upload's batch, or another prefix's: not this rotation's
            if self.clock() >= float(start) + self.window_seconds and await self.fleet.seal(
                row.batch_id
            ):
                log.info("batch.sealed", batch=row.batch_id, abandoned=True)

    async def release_idle(self) -> None:
        """Leave every joined batch that is not open here and has no file of ours on its way."""
        current = {b.batch_id for b in self._open.values()}
        for batch_id in sorted(self._joined - current):
            if not self.in_flight.pending(batch_id):
                await self.fleet.leave(batch_id)
                self._joined.discard(batch_id)

    def _expired(self, batch: _OpenBatch) -> bool:
        return self.clock() >= batch.window_start + self.window_seconds

    async def _seal(self, kind: BatchKind, batch: _OpenBatch) -> None:
        self._open.pop(kind, None)
        if await self.fleet.seal(batch.batch_id):
            log.info("batch.sealed", batch=batch.batch_id, items=batch.items)

    async def _open_new(self, kind: BatchKind) -> _OpenBatch:
        now = self.clock()
        window_start = now - (now % self.window_seconds)
        seq = 0
        while True:
            batch_id = batch_id_for(self.prefix, kind, window_start, seq)
            row = await self.manifest.get_batch(batch_id)
            if row is None:
                # Idempotent: a worker creating it at the same moment finds it made.
                row = await self.manifest.create_batch(
                    batch_id, kind, info={"window_start": window_start}
                )
                log.info("batch.opened", batch=batch_id, kind=kind)
            if row.state == "open" and await self.join(batch_id):
                opened = _OpenBatch(batch_id, window_start)
                self._open[kind] = opened
                return opened
            seq += 1  # this window already had a batch that filled up


@dataclass
class _OpenBatch:
    batch_id: str
    window_start: float
    items: int = 0
    """Files this worker routed to it."""
    slots: int = 0
    """Items reserved in the ledger and not routed yet."""
