"""Fetch one listed file safely, and what the export pool's fetchers share: re-listing, placing.

A file's length is checked against what the server announced; a small one is kept in memory, a
large one streamed to a hidden temporary name beside its destination and fsynced. The
:class:`Placer` writes the small ones of a group to their temporary names, makes the group
durable with one flush, and only then renames it into place; an archive is unpacked from its
temporary file into its folder instead. Whatever goes wrong, the temporary file is removed, so a
destination holds a whole file or nothing.

Signed download URLs expire (contract 3.5: about a day). A refused URL is replaced by listing the
part again (:class:`Relister`): one walk of the listing serves every file still waiting in the
pool, so a mass expiry costs one re-listing, not one per file.
"""

from __future__ import annotations

import contextlib
import errno
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import FileMetadata
from rfbatch.errors import IncompleteBodyError, SignedUrlRejectedError, TransferError
from rfbatch.localfs.atomic import Move, atomic_target, commit_many_sync, safe_extract_tar_async
from rfbatch.localfs.durable import GroupFlush
from rfbatch.state.ledger import Ledger
from rfbatch.state.records import DownloadMark, DownloadRow
from rfbatch.transfer import Transfer

ByteCounter = Callable[[int], None]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz")
# Errors that mean "the disk is full", not "this one file is bad".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# One more fetch of an archive that downloaded whole but would not unpack.
_CORRUPT_ARCHIVE_REFETCHES = 1


def is_archive(file_name: str) -> bool:
    return file_name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Planned:
    """One listed file and where it goes: ``dest``, or unpacked into ``unpack_into``."""

    part_name: str | None
    meta: FileMetadata
    dest: Path
    unpack_into: Path | None
    known_size: int | None = None

    @property
    def file_name(self) -> str:
        return self.meta.file_name

    @property
    def record_path(self) -> Path:
        """What the manifest row points at: the file, or the folder an archive went into."""
        return self.unpack_into if self.unpack_into is not None else self.dest


@dataclass(frozen=True)
class Fetched:
    size: int
    """Bytes downloaded (the archive's size for an unpacked archive)."""
    placed: int
    """Files written: 1, or the archive's members."""


def is_present(item: Planned, row: DownloadRow | None) -> bool:
    """Whether an earlier run already put ``item`` in place (blocking: stats the disk).

    A row left ``pending`` with a path and a size was written just before the rename, so a file
    of exactly that size at that path is the finished download of a run that died before it
    could record ``done``. An unpacked archive can only be checked by its folder.
    """
    if row is None or row.path != item.record_path or row.state not in ("done", "pending"):
        return False
    if item.unpack_into is not None:
        return row.state == "done" and item.unpack_into.is_dir()
    if row.size is None:
        return False
    try:
        st = item.dest.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == row.size


class Relister:
    """Fresh listing entries for the files of one part whose download URL was refused.

    The planner tracks every file it hands to the fetchers (:meth:`track`), and they untrack it
    when done (:meth:`untrack`). A re-listing walks the part from its first page until it has
    seen every tracked name and keeps their new entries, so the fetchers that hit the same
    expiry next find a fresh URL waiting instead of listing again. Memory stays bounded by the
    files in flight, not by the size of the batch.
    """

    def __init__(
        self,
        client: RoboflowClient,
        batch_id: str,
        part_name: str | None,
        page_size: int | None,
    ) -> None:
        self._client = client
        self._batch_id = batch_id
        self._part_name = part_name
        self._page_size = page_size
        self._lock = anyio.Lock()
        self._outstanding: dict[str, int] = {}
        self._fresh: dict[str, FileMetadata] = {}

    def track(self, name: str) -> None:
        self._outstanding[name] = self._outstanding.get(name, 0) + 1

    def untrack(self, name: str) -> None:
        left = self._outstanding.get(name, 0) - 1
        if left > 0:
            self._outstanding[name] = left
        else:
            self._outstanding.pop(name, None)
            self._fresh.pop(name, None)

    def current(self, meta: FileMetadata) -> FileMetadata:
        """The newest entry known for ``meta``'s file (fresher after a re-listing)."""
        return self._fresh.get(meta.file_name, meta)

    async def refresh(self, stale: FileMetadata) -> FileMetadata | None:
        """A listing entry with a newer URL than ``stale``'s, or ``None`` if no longer listed."""
        name = stale.file_name
        async with self._lock:
            known = self._fresh.get(name)
            if known is not None and known.download_url != stale.download_url:
                return known
            await self._relist(name)
            return self._fresh.get(name)

    async def _relist(self, name: str) -> None:
        wanted = set(self._outstanding) | {name}
        found: set[str] = set()
        pages = self._client.list_files(self._batch_id, self._part_name, self._page_size).pages()
        async with contextlib.aclosing(pages):
            async for page in pages:
                for entry in page.items:
                    if entry.file_name in wanted:
                        self._fresh[entry.file_name] = entry
                        found.add(entry.file_name)
                if found >= wanted:
                    return


@dataclass(eq=False)
class _Placement:
    item: Planned
    tmp: Path
    size: int
    body: bytes | None
    """Kept in memory, written by the commit; ``None``: already in ``tmp``, fsynced."""
    error: Exception | None = None


PlacedHook = Callable[[Planned, Fetched], None]
FailedHook = Callable[[Planned, Exception], Awaitable[None]]

# Bytes of small results held in memory until their group is written (RSS stays under 100 MB).
PLACER_BUDGET = 8 * 1024 * 1024
# A commit waits this long for a group of GROUP_FILES files (or half the budget) to gather:
# each group costs four thread hand-offs and a flush, whatever its size; a file recorded done
# a few milliseconds later costs nothing.
GROUP_FILES = 64
GROUP_LINGER = 0.05


class Placer:
    """Writes, renames and records downloaded files many at a time (a group commit), in a task
    of its own (:meth:`run`), so the fetchers go on downloading while a group is committed.

    For small results an export's cost is thread hand-offs, flushes and SQLite transactions,
    not bytes. Fetchers hand files over with :meth:`submit` (a small body in memory, a large
    one already written to its temporary name and fsynced) and go on; whatever is queued when
    a commit ends is the next group. A group is committed in this order, and the order is the
    crash guarantee (a file is recorded ``done`` only once its whole bytes are on disk under
    its final name; a crash or power loss never leaves a ``done`` file missing or short):

    1. one worker-thread call writes the small bodies to their temporary names and makes them
       durable with one flush per file system (:class:`~rfbatch.localfs.durable.GroupFlush`:
       syncfs, or fsync of each file where syncfs is not trusted). Nothing is under a final
       name yet, so a crash here leaves only temporary files, swept by the next run;
    2. one transaction records the group ``pending`` with path and size. A run killed after
       it finds any renamed file whole (its bytes were durable before the rename) and keeps
       it (:func:`is_present`); one not yet renamed has no file of that size and is fetched;
    3. one worker-thread call renames them all and flushes each folder once: after that flush
       the renames survive a power loss;
    4. one transaction records them ``done``. Only now are ``on_placed`` hooks called.

    A group's commit runs shielded from cancellation: a stopped export never leaves a file in
    place that it has not recorded. A file that fails (short, disk error) is removed and reported
    to ``on_failed``; a manifest that cannot record fails the whole group, none renamed
    unrecorded. What is still queued when the export stops is dropped (temporary files
    removed): never renamed, never recorded.
    """

    def __init__(
        self,
        manifest: Ledger,
        batch_id: str,
        *,
        on_placed: PlacedHook,
        on_failed: FailedHook,
        flush: GroupFlush | None = None,
        budget: int = PLACER_BUDGET,
    ) -> None:
        self._manifest = manifest
        self._batch_id = batch_id
        self._on_placed = on_placed
        self._on_failed = on_failed
        self._flush = flush if flush is not None else GroupFlush()
        self._budget = budget
        self._queue: list[_Placement] = []
        self._held = 0  # bytes of bodies queued or being written
        self._changed = anyio.Event()
        self._closed = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def submit(self, item: Planned, tmp: Path, size: int, body: bytes | None) -> None:
        """Queue ``item`` for the next group: ``body`` to be written to ``tmp``, or (``None``)
        ``tmp`` already written and fsynced. Waits while the queued bodies fill the budget.

        From its return the placer owns ``tmp`` (it renames or removes it).
        """
        if self._closed:
            raise RuntimeError("the placer is closed")
        held = len(body) if body is not None else 0
        while self._held and self._held + held > self._budget:
            await self._changed.wait()
        self._held += held
        self._queue.append(_Placement(item, tmp, size, body))
        self._notify()

    def close(self) -> None:
        """No more submissions: :meth:`run` commits what is queued and returns."""
        self._closed = True
        self._notify()

    async def run(self) -> None:
        """Commit groups until :meth:`close`; on cancellation drop (and clean) the queue."""
        try:
            while self._queue or not self._closed:
                if not self._queue:
                    await self._changed.wait()
                    continue
                with anyio.move_on_after(GROUP_LINGER):
                    while (
                        not self._closed
                        and len(self._queue) < GROUP_FILES
                        and self._held < self._budget // 2
                    ):
                        await self._changed.wait()
                group, self._queue = self._queue, []
                with anyio.CancelScope(shield=True):
                    await self._commit(group)
        finally:
            dropped, self._queue = self._queue, []
            if dropped:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_unlink_all, [e.tmp for e in dropped])

    async def _commit(self, group: list[_Placement]) -> None:
        writes = [e for e in group if e.body is not None]
        if writes:
            try:
                errors = await anyio.to_thread.run_sync(
                    self._flush.write_all,
                    [(e.tmp, e.body) for e in writes if e.body is not None],
                )
            finally:
                # Written (or failed): the bodies leave memory and make room for the next.
                for entry in writes:
                    self._held -= len(entry.body or b"")
                    entry.body = None
                self._notify()
            for entry, error in zip(writes, errors, strict=True):
                entry.error = error
        await self._place(group)
        for entry in group:
            if entry.error is None:
                self._on_placed(entry.item, Fetched(entry.size, 1))
            else:
                await self._on_failed(entry.item, entry.error)

    async def _place(self, group: list[_Placement]) -> None:
        """Steps 2-4 for the files of ``group`` that are durable under their temporary names."""
        ready = [e for e in group if e.error is None]
        if not ready:
            return
        try:
            await self._mark(ready, "pending")
        except Exception as exc:  # the manifest failed: nothing renamed, nothing recorded
            for entry in ready:
                entry.error = exc
            await anyio.to_thread.run_sync(_unlink_all, [e.tmp for e in ready])
            return
        # Each tmp is durable: written and flushed by step 1, or fsynced by Transfer.download.
        results = await anyio.to_thread.run_sync(
            commit_many_sync, [Move(e.tmp, e.item.dest, e.size) for e in ready]
        )
        for entry, error in zip(ready, results, strict=True):
            entry.error = error
        placed = [e for e in ready if e.error is None]
        try:
            await self._mark(placed, "done")
        except Exception as exc:  # in place and recorded pending: a rerun keeps them
            for entry in placed:
                entry.error = exc

    async def _mark(self, group: list[_Placement], state: Literal["pending", "done"]) -> None:
        marks = [
            DownloadMark(e.item.part_name, e.item.file_name, e.item.dest, e.size) for e in group
        ]
        await self._manifest.mark_downloads(self._batch_id, state, marks)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


class Fetcher:
    """Downloads :class:`Planned` files and hands them to its :class:`Placer`; one instance
    serves every worker (run :meth:`Placer.run` beside them, ``placer`` attribute).

    A file is reported through ``on_placed`` once it is in place and recorded ``done``, or
    through ``on_failed`` when placing it failed; :meth:`fetch` itself raises why a download
    failed. An archive is unpacked and recorded by the fetcher itself, shielded from
    cancellation (it is short and local), so a stopped export never leaves a file in place
    that it has not recorded; only the download itself is cut short.
    """

    def __init__(
        self,
        transfer: Transfer,
        manifest: Ledger,
        batch_id: str,
        *,
        refresh_attempts: int,
        on_placed: PlacedHook,
        on_failed: FailedHook,
        on_bytes: ByteCounter | None = None,
        flush: GroupFlush | None = None,
    ) -> None:
        self._transfer = transfer
        self._manifest = manifest
        self.placer = Placer(
            manifest, batch_id, on_placed=on_placed, on_failed=on_failed, flush=flush
        )
        self._batch_id = batch_id
        self._refresh_attempts = refresh_attempts
        self._on_placed = on_placed
        self._on_bytes = on_bytes
        self.refreshed = 0
        """Download URLs replaced by a fresh listing after the storage refused them."""

    async def fetch(self, item: Planned, relister: Relister) -> None:
        """Download ``item`` and hand it to the placer (an archive: unpack and record it), or
        raise why not.

        Raises :class:`~rfbatch.errors.TransferError` (refused, truncated or failing downloads,
        after their retries), :class:`~rfbatch.errors.UnsafePathError` or
        :class:`~rfbatch.errors.IncompleteBodyError` (an archive that is hostile or will not
        unpack), an :class:`~rfbatch.errors.ApiError` from a re-listing, or :class:`OSError`
        (local disk).
        """
        meta = relister.current(item.meta)
        refreshes = 0
        refetches = 0
        while True:
            tmp = atomic_target(item.dest)
            handed = False
            try:
                try:
                    # No expected length: a size remembered from an earlier run may be stale;
                    # the transfer checks the body against the Content-Length it announces.
                    if item.unpack_into is None:
                        # A small body stays in memory: the placer writes its whole group in
                        # one thread call and flushes it once.
                        size, body = await self._transfer.download_or_keep(
                            meta.download_url, tmp, on_bytes=self._on_bytes
                        )
                    else:
                        body = None
                        size = await self._transfer.download(
                            meta.download_url, tmp, None, on_bytes=self._on_bytes
                        )
                except SignedUrlRejectedError as exc:
                    if refreshes >= self._refresh_attempts:
                        raise TransferError(
                            f"download URL refused {refreshes + 1} times, even after listing "
                            f"the file again: {exc}"
                        ) from None
                    refreshes += 1
                    self.refreshed += 1
                    fresh = await relister.refresh(meta)
                    if fresh is None:
                        raise TransferError(
                            "download URL refused and the file is no longer listed"
                        ) from None
                    meta = fresh
                    continue
                if item.unpack_into is None:
                    await self.placer.submit(item, tmp, size, body)
                    handed = True
                    return
                with anyio.CancelScope(shield=True):
                    try:
                        placed = await safe_extract_tar_async(tmp, item.unpack_into)
                    except IncompleteBodyError:
                        # Whole by its length, yet unreadable: one more fetch, no more.
                        if refetches >= _CORRUPT_ARCHIVE_REFETCHES:
                            raise
                        refetches += 1
                        continue
                    await self._manifest.mark_download(
                        self._batch_id,
                        item.part_name,
                        item.file_name,
                        "done",
                        path=item.unpack_into,
                        size=size,
                    )
                    self._on_placed(item, Fetched(size, len(placed)))
                return
            finally:
                if not handed:
                    with anyio.CancelScope(shield=True):
                        await anyio.Path(tmp).unlink(missing_ok=True)
