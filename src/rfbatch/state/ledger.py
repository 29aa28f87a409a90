"""The ledger: what the pipeline needs from durable state, whatever keeps it.

:class:`Ledger` is the interface every implementation honours: :class:`~rfbatch.state.manifest.
SqliteManifest` (one process, a state directory) and :class:`~rfbatch.state.postgres.
PostgresLedger` (a fleet of workers on one database). Both subclass it, so what the interface
derives from their own methods (:meth:`DownloadLedger.mark_download`, the async context manager)
is written once, here. The contract suite in ``tests/state`` runs against each implementation.

What every method promises, unless its own text says more:

* **One call, one transaction.** A call that writes commits all of its rows or none of them;
  once it returns, what it wrote survives a crash of the process. A reader never sees half of
  another call's write.
* **Checked before written.** A state or kind outside its ``records`` tuple raises
  :class:`~rfbatch.errors.InvalidStateError` before anything is written; an update of a batch
  or shard that does not exist raises :class:`~rfbatch.errors.UnknownBatchError` or
  :class:`~rfbatch.errors.UnknownShardError` and writes nothing.
* **Closed is closed.** After :meth:`Ledger.close` every call raises
  :class:`~rfbatch.errors.ManifestClosedError`; ``close`` itself may be called again.
* **Any text.** Paths, names and event ids may hold lone surrogates (undecodable bytes of a file
  name); they are stored losslessly and come back equal. Free text (errors, reasons) is stored
  with such characters escaped.
* **Timestamps** (``updated_at``, ``created_at``, the retention of events) come from the clock
  the implementation was opened with, so tests can drive them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from rfbatch.media import FoundFile, Skipped
from rfbatch.state.records import (
    DONE_BATCH_STATES,
    BatchKind,
    BatchRow,
    BatchState,
    DownloadMark,
    DownloadRow,
    DownloadState,
    FileRow,
    FileState,
    Forgotten,
    ShardRow,
    ShardState,
)

EVENT_RETENTION = 7 * 24 * 3600.0
"""Seconds a webhook event id is remembered at least. A redelivery after that is taken as new,
which costs one poll of the API at most: a notification only ever says "look again"."""


class FileLedger(Protocol):
    """Source files, keyed by absolute path, and their tar member names per batch."""

    async def filter_new(
        self, files: Sequence[FoundFile], batch_of: Callable[[FoundFile], str] | None = None
    ) -> list[FoundFile]:
        """Record every file and return, in the order given, those that must be sent.

        Returned: unknown files (recorded ``seen``); files whose size or mtime changed (reset
        to ``seen`` with batch, shard, member name, attempts and error cleared); unchanged files
        in ``seen``, ``settled`` or ``failed`` (state kept, scan details refreshed). Not
        returned: unchanged files that are done (``uploaded``, ``ingested``, ``skipped``) or in
        a shard (``packed``, ``uploading``). A path given twice is returned once. With
        ``batch_of``, an unchanged ``uploaded``/``ingested`` file recorded for another batch
        than ``batch_of(file)`` is returned and reset too.
        """

    async def record_skipped(self, items: Sequence[Skipped]) -> list[Skipped]:
        """Record files that can never be sent: state ``skipped``, ``last_error`` the reason
        (``"reason: detail"``), created if unknown, shard cleared. Returns the items not
        recorded so already (same size, mtime and reason)."""

    async def mark(
        self,
        paths: Iterable[Path],
        state: FileState,
        *,
        batch_id: str | None = None,
        shard_id: str | None = None,
        error: str | None = None,
        only_shard: str | None = None,
    ) -> int:
        """Move the known files among ``paths`` to ``state``; return how many rows changed.

        ``batch_id``/``shard_id`` are set when given and kept when ``None``; ``last_error``
        becomes ``error`` (cleared by ``None``); ``attempts`` grows by one when ``state`` is
        ``uploading``. With ``only_shard`` a row changes only while it still belongs to that
        shard, so the fate of an old version never lands on a newer one. Unknown paths are
        ignored.
        """

    async def move_state(
        self,
        from_states: Iterable[FileState],
        to_state: FileState,
        *,
        batch_id: str | None = None,
        error: str | None = None,
    ) -> int:
        """Move every file in ``from_states`` (of ``batch_id``, or of all batches) to
        ``to_state``, ``last_error`` set to ``error``; return how many moved. Done inside the
        store without loading the rows: batches of millions go through it."""

    async def get_file(self, path: Path) -> FileRow | None:
        """The file's row, or ``None`` if the path was never recorded."""

    def files_in_state(
        self, states: Iterable[FileState], batch_id: str | None = None
    ) -> AsyncIterator[FileRow]:
        """Every file in one of ``states`` (optionally of one batch), read a page at a time.

        Ordered by state as given, then by path. Not a snapshot: a row that leaves its state
        before its page is read is not yielded; one that moves to a state later in ``states``
        may be yielded again there.
        """

    async def counts(self, batch_id: str | None = None) -> dict[FileState, int]:
        """Files per state, every state present (zeros included), overall or for one batch."""

    async def assign_members(self, batch_id: str, files: Sequence[FoundFile]) -> dict[Path, str]:
        """The tar member name of each file in ``batch_id``, new ones assigned as needed.

        A file keeps the name it was first given in a batch, across calls, restarts and
        (for a shared ledger) workers; names are unique within a batch, made by
        :func:`rfbatch.member_names.member_name`. Known files' rows get the name and batch.
        """


class BatchLedger(Protocol):
    """Batches of the service, and the shards (tars) packed for them."""

    async def create_shard(self, batch_id: str, paths: Sequence[Path], *, size: int) -> ShardRow:
        """A new shard (fresh id, state ``packed``, ``size`` bytes) holding ``paths``.

        Its files move to ``packed`` with their ``shard_id``/``batch_id`` set and error
        cleared, in the same transaction: a shard and its files' states never disagree.
        """

    async def update_shard(
        self,
        shard_id: str,
        *,
        state: ShardState | None = None,
        error: str | None = None,
        bump_attempts: bool = False,
    ) -> ShardRow:
        """Set the state (kept when ``None``) and ``last_error`` (cleared by ``None``), add one
        attempt if asked; return the new row.

        Unknown id: :class:`~rfbatch.errors.UnknownShardError`.
        """

    async def list_shards(
        self, *, batch_id: str | None = None, states: Iterable[ShardState] | None = None
    ) -> list[ShardRow]:
        """Shards, oldest first, optionally of one batch and only in ``states``."""

    async def create_batch(
        self, batch_id: str, kind: BatchKind, *, info: Mapping[str, Any] | None = None
    ) -> BatchRow:
        """Create the batch (state ``open``, ``info`` stored) or return it as it is.

        Idempotent for the same kind; an id held by the other kind, or an invalid id, raises
        :class:`~rfbatch.errors.ConfigError`.
        """

    async def get_batch(self, batch_id: str) -> BatchRow | None: ...

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        expected_count: int | None = None,
        job_id: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> BatchRow:
        """Set the fields given (``None`` keeps one), merge ``info`` into the stored info
        (read and written in one transaction); return the new row. Unknown id:
        :class:`~rfbatch.errors.UnknownBatchError`."""

    async def list_batches(
        self, *, states: Iterable[BatchState] | None = None, kind: BatchKind | None = None
    ) -> list[BatchRow]:
        """Batches, oldest first, optionally only in ``states`` and of ``kind``."""


class DownloadLedger(Protocol):
    """The result files of a batch: pending, done (and where written) or failed."""

    async def add_downloads(
        self, batch_id: str, items: Sequence[tuple[str | None, str, int | None]]
    ) -> int:
        """Record ``(part_name, file_name, size)`` as ``pending``; rows already known are kept
        untouched. Return how many were new. A ``None`` part is stored and listed as ``""``."""

    async def mark_download(
        self,
        batch_id: str,
        part_name: str | None,
        file_name: str,
        state: DownloadState,
        *,
        path: Path | None = None,
        size: int | None = None,
    ) -> None:
        """:meth:`mark_downloads` for one file."""
        await self.mark_downloads(batch_id, state, [DownloadMark(part_name, file_name, path, size)])

    async def mark_downloads(
        self, batch_id: str, state: DownloadState, marks: Sequence[DownloadMark]
    ) -> None:
        """Set the state of every mark's download in one transaction, creating rows as needed;
        a mark's ``path``/``size`` of ``None`` keeps the stored value."""

    async def list_downloads(
        self, batch_id: str, *, states: Iterable[DownloadState] | None = None
    ) -> list[DownloadRow]:
        """The batch's downloads by part and file name, optionally only in ``states``."""


class EventLedger(Protocol):
    """Webhook event ids already handled."""

    async def record_event(self, event_id: str) -> bool:
        """``True`` the first time ``event_id`` is recorded, ``False`` for a redelivery.

        Atomic test-and-set: of two concurrent calls with one id, exactly one gets ``True``.
        An id is remembered for at least :data:`EVENT_RETENTION` seconds; older ones are
        forgotten by the ledger itself, so the record stays bounded however long it runs.
        """


class RetentionLedger(Protocol):
    """Forgetting what left the source long ago, so the state tracks the live tree."""

    async def forget(
        self,
        older_than: float,
        *,
        done_batch_states: Iterable[BatchState] = DONE_BATCH_STATES,
        exists: Callable[[str], bool] = ...,
    ) -> Forgotten:
        """Forget files in a final state, last changed before ``older_than``, whose batch is
        done (``done_batch_states``) or who have none, and that ``exists`` says are gone; then
        batches in a done state, older than ``older_than``, that no file refers to (with their
        shards, member names and downloads), and event ids past :data:`EVENT_RETENTION`. The
        space is given back to the file system. An unchanged file still recorded is never
        sent again; only a forgotten one may be."""


class Ledger(FileLedger, BatchLedger, DownloadLedger, EventLedger, RetentionLedger, Protocol):
    """All durable state of rfbatch; an async context manager that closes it on exit."""

    async def check_writable(self) -> None:
        """Return only if a write could be committed now (the daemon's readiness check)."""

    async def close(self) -> None:
        """Release the ledger (connections, locks). Safe to call again."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
