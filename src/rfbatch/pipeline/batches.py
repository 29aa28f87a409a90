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
        for path in paths:
            self._paths.discard(os.fspath(path))
            if batch_id is not None and self._per_batch[batch_id] > 0:
                self._per_batch[batch_id] -= 1
                if not self._per_batch[batch_id]:
                    del self._per_batch[batch_id]  # a daemon sees batches for months

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


class RotatingBatches:
    """Opens, fills and seals batches by time window and item count (daemon mode).

    The open batch of each kind lives in the manifest (state ``open``), so a restart keeps
    filling it while its window lasts. Sealing is recorded before the next batch is opened.
    """

    def __init__(
        self,
        manifest: Ledger,
        *,
        prefix: str,
        window_seconds: float,
        max_items: int,
        in_flight: InFlight,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manifest = manifest
        self.prefix = prefix
        self.window_seconds = window_seconds
        self.max_items = max_items
        self.in_flight = in_flight
        self.clock = clock
        self._open: dict[BatchKind, _OpenBatch] = {}
        self._lock = anyio.Lock()

    async def load(self) -> None:
        """Pick up the batches a previous run left open."""
        for row in await self.manifest.list_batches(states=["open"]):
            info = row.info or {}
            self._open[row.kind] = _OpenBatch(
                row.batch_id,
                float(info.get("window_start", row.created_at)),
                int(info.get("items", 0)),
            )

    async def batch_for(self, file: FoundFile) -> str:
        kind = KIND_OF[file.kind]
        async with self._lock:
            current = self._open.get(kind)
            if (
                current is not None
                and not self._expired(current)
                and current.items < self.max_items
            ):
                current.items += 1
                if current.items % 100 == 0 or current.items == self.max_items:
                    await self.manifest.update_batch(
                        current.batch_id, info={"items": current.items}
                    )
                return current.batch_id
            if current is not None:
                await self._seal(kind, current)
            opened = await self._open_new(kind)
            opened.items = 1
            return opened.batch_id

    async def seal_expired(self) -> None:
        """Seal open batches whose window has passed; called periodically by the daemon."""
        async with self._lock:
            for kind, current in list(self._open.items()):
                if self._expired(current):
                    await self._seal(kind, current)

    def _expired(self, batch: _OpenBatch) -> bool:
        return self.clock() >= batch.window_start + self.window_seconds

    async def _seal(self, kind: BatchKind, batch: _OpenBatch) -> None:
        await self.manifest.update_batch(
            batch.batch_id, state="sealed", info={"items": batch.items}
        )
        self._open.pop(kind, None)
        log.info("batch.sealed", batch=batch.batch_id, items=batch.items)

    async def _open_new(self, kind: BatchKind) -> _OpenBatch:
        now = self.clock()
        window_start = now - (now % self.window_seconds)
        seq = 0
        while True:
            batch_id = batch_id_for(self.prefix, kind, window_start, seq)
            if await self.manifest.get_batch(batch_id) is None:
                break
            seq += 1  # this window already had a batch that filled up
        await self.manifest.create_batch(
            batch_id, kind, info={"window_start": window_start, "items": 0}
        )
        opened = _OpenBatch(batch_id, window_start, 0)
        self._open[kind] = opened
        log.info("batch.opened", batch=batch_id, kind=kind)
        return opened


@dataclass
class _OpenBatch:
    batch_id: str
    window_start: float
    items: int
