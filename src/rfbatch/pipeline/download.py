"""Fetch one listed file safely, and what the export pool's fetchers share: re-listing, placing.

A file is streamed to a hidden temporary name beside its destination, its length is checked
against what the server announced, it is fsynced and only then renamed into place; an archive
is unpacked from that temporary file into its folder instead. Whatever goes wrong, the temporary
file is removed, so a destination holds a whole file or nothing.

Signed download URLs expire (contract 3.5: about a day). A refused URL is replaced by listing the
part again (:class:`Relister`): one walk of the listing serves every file still waiting in the
pool, so a mass expiry costs one re-listing, not one per file.
"""

from __future__ import annotations

import contextlib
import errno
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import FileMetadata
from rfbatch.errors import IncompleteBodyError, SignedUrlRejectedError, TransferError
from rfbatch.localfs.atomic import Move, atomic_target, commit_many_sync, safe_extract_tar_async
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
    error: Exception | None = None
    settled: bool = False


class Placer:
    """Renames downloaded files into place and records them, many at a time (a group commit).

    For small results an export's cost is thread hand-offs and SQLite transactions, not bytes.
    Files that finish while a commit runs wait for the next one, which takes them all: one
    transaction records them ``pending`` with path and size (before the rename, so a run killed
    right after it finds the file whole and keeps it: :func:`is_present`), one worker-thread
    call renames them and flushes each folder once, and one transaction records them ``done``.
    """

    def __init__(self, manifest: Ledger, batch_id: str) -> None:
        self._manifest = manifest
        self._batch_id = batch_id
        self._lock = anyio.Lock()
        self._queue: list[_Placement] = []

    async def place(self, item: Planned, tmp: Path, size: int) -> None:
        """Put the fsynced ``tmp`` at ``item.dest`` and record it done, or raise why not.

        On failure ``tmp`` may remain; the caller removes it.
        """
        entry = _Placement(item, tmp, size)
        self._queue.append(entry)
        async with self._lock:
            # Whoever holds the lock commits everything queued, this entry's included, unless
            # the commit before already took it.
            if not entry.settled:
                group, self._queue = self._queue, []
                await self._commit(group)
        if entry.error is not None:
            raise entry.error

    async def _commit(self, group: list[_Placement]) -> None:
        try:
            await self._mark(group, "pending")
            results = await anyio.to_thread.run_sync(
                # Transfer.download fsynced each tmp before it returned, as this requires.
                commit_many_sync,
                [Move(e.tmp, e.item.dest, e.size) for e in group],
            )
            for entry, error in zip(group, results, strict=True):
                entry.error = error
            await self._mark([e for e in group if e.error is None], "done")
        except Exception as exc:  # the manifest failed: no file of the group is recorded done
            for entry in group:
                entry.error = entry.error or exc
        finally:
            for entry in group:
                entry.settled = True

    async def _mark(self, group: list[_Placement], state: Literal["pending", "done"]) -> None:
        marks = [
            DownloadMark(e.item.part_name, e.item.file_name, e.item.dest, e.size) for e in group
        ]
        await self._manifest.mark_downloads(self._batch_id, state, marks)


class Fetcher:
    """Downloads :class:`Planned` files into place; one instance serves every worker.

    Each file is recorded ``done`` in the manifest once it is in place, then ``on_placed`` is
    called. Placing and recording run shielded from cancellation (both are short and local),
    so a stopped export never leaves a file in place that it has not recorded; only the
    download itself is cut short.
    """

    def __init__(
        self,
        transfer: Transfer,
        manifest: Ledger,
        batch_id: str,
        *,
        refresh_attempts: int,
        on_placed: Callable[[Planned, Fetched], None],
        on_bytes: ByteCounter | None = None,
    ) -> None:
        self._transfer = transfer
        self._manifest = manifest
        self._placer = Placer(manifest, batch_id)
        self._batch_id = batch_id
        self._refresh_attempts = refresh_attempts
        self._on_placed = on_placed
        self._on_bytes = on_bytes
        self.refreshed = 0
        """Download URLs replaced by a fresh listing after the storage refused them."""

    async def fetch(self, item: Planned, relister: Relister) -> Fetched:
        """Put ``item`` in place, or raise why not.

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
            renamed = False
            try:
                try:
                    # No expected length: a size remembered from an earlier run may be stale;
                    # the transfer checks the body against the Content-Length it announces.
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
                with anyio.CancelScope(shield=True):
                    if item.unpack_into is not None:
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
                        fetched = Fetched(size, len(placed))
                    else:
                        await self._placer.place(item, tmp, size)
                        renamed = True
                        fetched = Fetched(size, 1)
                    self._on_placed(item, fetched)
                return fetched
            finally:
                if not renamed:
                    with anyio.CancelScope(shield=True):
                        await anyio.Path(tmp).unlink(missing_ok=True)
