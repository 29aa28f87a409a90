"""Sharing the work among workers: claims, leases, and batches filled by several workers.

A SQLite ledger has one worker (its directory lock sees to that), so :class:`SoloFleet` is the
ledger's own answers seen as a fleet of one: everything is this worker's. The PostgreSQL ledger
is a fleet (:mod:`rfbatch.state.postgres.fleet`): every worker registers with a lease that its
heartbeat renews, and claims files and batches with ``FOR UPDATE SKIP LOCKED``; when a worker
dies its lease lapses and the others adopt what it held.

What a worker may do with a batch, either way:

* **fill** it while it is open: :meth:`Fleet.join` first (refused once it is sealed), slots
  taken a few at a time (:meth:`Fleet.take_slots`) so the fleet as a whole keeps to the item
  limit, :meth:`Fleet.leave` once none of its files is on the way there any more;
* **seal** it (:meth:`Fleet.seal`): whoever sees its window end or its slots run out;
* **drive** it through its lifecycle only once claimed (:meth:`Fleet.claim_batches`), and only
  when no other live worker still fills it (:meth:`Fleet.busy`): so each batch's ingest is
  confirmed, its job started and its results exported by one worker at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from rfbatch.state.ledger import Ledger
from rfbatch.state.records import BatchState, FileRow, FileState

# Files in these states belong to whoever claimed them; a dead worker's are adopted.
CLAIMED_STATES: tuple[FileState, ...] = ("seen", "settled", "packed", "uploading", "failed")
SOLO_WORKER = "solo"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_age: float
    """Seconds since its last heartbeat."""
    live: bool
    """Its lease has not lapsed (a stopped worker's ends at once)."""
    stopped: bool
    files_claimed: int
    batches_claimed: int


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """What ``rfbatch status`` shows: workers, what each holds, and the backlog."""

    shared: bool
    workers: list[WorkerInfo] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    """Files per state, every state present."""
    batches: dict[str, int] = field(default_factory=dict)
    """Batches per state (only states that occur)."""
    unclaimed: int = 0
    """Files in a claimed state whose worker is gone: the next heartbeat's adoption takes them."""


class Fleet(Protocol):
    """The work-sharing half of a ledger. ``worker_id`` names this worker."""

    worker_id: str
    shared: bool
    """Other workers may use the ledger at the same time (PostgreSQL)."""
    lease_seconds: float

    async def adopt(self, *, limit: int | None = None) -> list[FileRow]:
        """Take over files that a worker gone (lease lapsed, or an earlier run of this one)
        left in a claimed state: in a shard (``packed``/``uploading``: back to ``seen``, error
        ``interrupted``; their PUT may or may not have landed, so they are sent again) or
        waiting (``seen``, ``settled``, ``failed``, kept). Returns the rows as adopted (the
        in-flight ones still name their batch), at most ``limit``."""

    async def take_slots(self, batch_id: str, want: int, limit: int) -> int:
        """Reserve up to ``want`` of the open batch's ``limit`` items; return how many (0 when
        it is full or no longer open)."""

    async def seal(self, batch_id: str) -> bool:
        """Seal the batch if it is still open; ``True`` if this call sealed it."""

    async def join(self, batch_id: str) -> bool:
        """Become one of the batch's fillers; ``False`` if it no longer takes files."""

    async def leave(self, batch_id: str) -> None:
        """No file of this worker is on its way to the batch any more."""

    async def busy(self, batch_id: str) -> bool:
        """Another live worker still fills the batch: its lifecycle must wait."""

    async def claim_batches(self, states: Iterable[BatchState], limit: int) -> list[str]:
        """Batches in ``states`` this worker drives: those it holds, then unclaimed ones (or a
        dead worker's), oldest first, at most ``limit`` in all."""

    async def fleet_status(self) -> FleetStatus: ...


class SoloFleet:
    """The fleet of one over a ledger no other worker uses (SQLite)."""

    shared = False
    worker_id = SOLO_WORKER
    lease_seconds = 0.0

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def adopt(self, *, limit: int | None = None) -> list[FileRow]:
        # Only this process uses the ledger: whatever a shard held was left by a run that died.
        rows: list[FileRow] = []
        async for row in self.ledger.files_in_state(["packed", "uploading"]):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        if rows:
            await self.ledger.mark([row.path for row in rows], "seen", error="interrupted")
        return rows

    async def take_slots(self, batch_id: str, want: int, limit: int) -> int:
        row = await self.ledger.get_batch(batch_id)
        if row is None or row.state != "open":
            return 0
        items = int(row.info.get("items", 0))
        granted = max(0, min(want, limit - items))
        if granted:
            await self.ledger.update_batch(batch_id, info={"items": items + granted})
        return granted

    async def seal(self, batch_id: str) -> bool:
        row = await self.ledger.get_batch(batch_id)
        if row is None or row.state != "open":
            return False
        await self.ledger.update_batch(batch_id, state="sealed")
        return True

    async def join(self, batch_id: str) -> bool:
        # A sealed batch still takes a restarted run's resumed files: with one worker its
        # lifecycle cannot have moved on while they were on their way.
        row = await self.ledger.get_batch(batch_id)
        return row is not None and row.state in ("open", "sealed")

    async def leave(self, batch_id: str) -> None:
        return None

    async def busy(self, batch_id: str) -> bool:
        return False

    async def claim_batches(self, states: Iterable[BatchState], limit: int) -> list[str]:
        rows = await self.ledger.list_batches(states=states)
        return [row.batch_id for row in rows[:limit]]

    async def fleet_status(self) -> FleetStatus:
        counts = await self.ledger.counts()
        batches: dict[str, int] = {}
        for row in await self.ledger.list_batches():
            batches[row.state] = batches.get(row.state, 0) + 1
        return FleetStatus(
            shared=False, files={str(k): n for k, n in counts.items()}, batches=batches
        )


def fleet_of(ledger: Ledger) -> Fleet:
    """The ledger itself when it is shared (it implements :class:`Fleet`), else a fleet of one."""
    if getattr(ledger, "shared", False):
        return ledger  # type: ignore[return-value]  # PostgresLedger: checked by mypy there
    return SoloFleet(ledger)
