"""Export staged batches to a local folder: every part, every page, N fetchers, resumable.

::

    parts ──► list pages ──(prefetch_pages)──► plan ──(workers)──► N fetchers ──► placer
              (nextPageToken)                  (names checked,      (length check;    (group
                                                present ones        small bodies      commit:
                                                skipped)            kept in memory;   write, one
                                                                    archives          flush,
                                                                    unpacked; expired rename,
                                                                    URLs listed       record)
                                                                    again)

Listing runs ahead of the fetchers by at most ``export.prefetch_pages`` pages, and the fetchers
work across pages and parts. The placer (:class:`~rfbatch.pipeline.download.Placer`) is a task
of its own: fetchers hand it their files and go on downloading while it commits a group.
The layout is the reference client's: ``<output>/<partName>/
<fileName>`` for the parts of a multipart batch, ``<output>/<fileName>`` otherwise; ``.tar`` and
``.tar.gz`` files are unpacked into the folder they would have gone to.

A name from the server that would land outside the output folder is refused and recorded as a
failure; the rest carry on. The manifest keeps one row per file, so a rerun fetches only what is
missing (``force`` fetches everything again). Free disk space is checked before the export and
before each file; below ``export.min_free_bytes`` the export stops with
:attr:`ExportResult.stopped` set and no partial file left behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.api.schemas import FileMetadata
from rfbatch.app import Services
from rfbatch.errors import (
    ConfigError,
    FatalError,
    RfbatchError,
    UnsafePathError,
)
from rfbatch.ids import validate_batch_id
from rfbatch.localfs.atomic import SafeRoot, safe_join, sweep_stale_temps
from rfbatch.localfs.diskspace import DiskGuard
from rfbatch.localfs.durable import GroupFlush
from rfbatch.pipeline.download import (
    DISK_FULL_ERRNOS,
    Fetched,
    Fetcher,
    Planned,
    Relister,
    is_archive,
    is_present,
)
from rfbatch.redact import redact_text
from rfbatch.state.records import DownloadRow

MULTIPART = "multipart-batch"

_log: Any = structlog.get_logger("rfbatch.export")


@dataclass(frozen=True)
class FileFailure:
    """A file (or, with ``file_name`` ``None``, a whole part) that could not be exported."""

    part_name: str | None
    file_name: str | None
    reason: str

    def to_json(self) -> dict[str, str | None]:
        return {"part": self.part_name, "file": self.file_name, "reason": self.reason}


@dataclass
class ExportProgress:
    """Live counters of one batch's export, handed to ``on_progress`` whenever they move."""

    batch_id: str
    files_listed: int = 0
    files_downloaded: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_received: int = 0
    listing_done: bool = False

    @property
    def files_finished(self) -> int:
        return self.files_downloaded + self.files_skipped + self.files_failed


ProgressHook = Callable[[ExportProgress], None]


@dataclass
class ExportResult:
    """What one batch's export did."""

    batch_id: str
    output_dir: Path
    downloaded: int = 0
    """Files fetched in this run (an unpacked archive counts once)."""
    skipped: int = 0
    """Files already in place from an earlier run."""
    unpacked: int = 0
    """Files placed from archives."""
    bytes: int = 0
    """Bytes of the files fetched in this run (retried attempts not counted)."""
    seconds: float = 0.0
    refreshed: int = 0
    """Expired or refused download URLs replaced from a fresh listing."""
    failed: list[FileFailure] = field(default_factory=list)
    stopped: str | None = None
    """Why the export stopped early (the disk-space floor), or ``None``."""

    @property
    def complete(self) -> bool:
        return not self.failed and self.stopped is None

    def summary(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "output": str(self.output_dir),
            "files_downloaded": self.downloaded,
            "files_skipped": self.skipped,
            "files_failed": len(self.failed),
            "files_unpacked": self.unpacked,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "urls_refreshed": self.refreshed,
            "complete": self.complete,
            "stopped": self.stopped,
            "failed": [f.to_json() for f in self.failed],
        }


@dataclass(frozen=True)
class _Part:
    name: str | None
    base: Path


@dataclass(frozen=True)
class _PagePlan:
    fetch: list[Planned]
    present: list[Planned]
    refused: list[tuple[FileMetadata, str]]


async def export_batch(
    services: Services,
    batch_id: str,
    output_dir: Path,
    *,
    parts: Sequence[str] | None = None,
    unpack: bool = True,
    force: bool = False,
    on_progress: ProgressHook | None = None,
) -> ExportResult:
    """Download every file of ``batch_id`` (or of the named ``parts``) into ``output_dir``.

    Raises :class:`~rfbatch.errors.ConfigError` for a bad batch id, an output path that is not
    a folder, or parts that the batch does not have; API errors from the batch, parts and
    listing calls propagate. Per-file problems are recorded in :attr:`ExportResult.failed`.
    """
    validate_batch_id(batch_id)
    run = _BatchExport(services, batch_id, output_dir, unpack, force, on_progress)
    return await run.run(parts)


async def export_batches(
    services: Services,
    batch_ids: Iterable[str],
    output_dir: Path,
    *,
    parts: Sequence[str] | None = None,
    unpack: bool = True,
    force: bool = False,
    on_progress: ProgressHook | None = None,
) -> list[ExportResult]:
    """Export each batch into ``output_dir/<batch_id>``, one after another.

    Job outputs need the subfolders: ``<job>-processing`` and ``<job>-export`` hold files of the
    same names. When one export stops for lack of disk space, the batches after it are not
    started (the stopped result is the last one returned).
    """
    ids = [validate_batch_id(b) for b in batch_ids]
    results: list[ExportResult] = []
    for batch_id in ids:
        result = await export_batch(
            services,
            batch_id,
            output_dir / batch_id,
            parts=parts,
            unpack=unpack,
            force=force,
            on_progress=on_progress,
        )
        results.append(result)
        if result.stopped is not None:
            break
    return results


class _BatchExport:
    """One batch's export: the stages, their streams, and the result they fill in."""

    def __init__(
        self,
        services: Services,
        batch_id: str,
        output_dir: Path,
        unpack: bool,
        force: bool,
        on_progress: ProgressHook | None,
    ) -> None:
        self.services = services
        self.settings = services.settings.export
        self.batch_id = batch_id
        self.output = Path(output_dir).expanduser().absolute()
        self.unpack = unpack
        self.force = force
        self.on_progress = on_progress
        self.result = ExportResult(batch_id, self.output)
        self.progress = ExportProgress(batch_id)
        self.disk = DiskGuard(self.output, self.settings.min_free_bytes)
        # Bound once for the whole export: a lazy module logger binds again at every call.
        self.log: Any = _log.bind()
        self.flush = GroupFlush()
        self.fetcher = Fetcher(
            services.transfer,
            services.manifest,
            batch_id,
            refresh_attempts=services.transfer.config.refresh_attempts,
            on_placed=self._placed,
            on_failed=self._place_failed,
            on_bytes=self._count_bytes,
            flush=self.flush,
        )
        self.rows: dict[tuple[str, str], DownloadRow] = {}
        self.relisters: dict[str | None, Relister] = {}
        self._prepared: set[Path] = set()
        self._scope: anyio.CancelScope | None = None

    # -- progress -------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _count_bytes(self, n: int) -> None:
        self.progress.bytes_received += n
        self._changed()

    # -- the run --------------------------------------------------------------------------

    async def run(self, wanted_parts: Sequence[str] | None) -> ExportResult:
        started = time.monotonic()
        chosen = await self._parts(wanted_parts)
        if not self.stop_if_short(await self._make_output()):
            if not self.force:
                rows = await self.services.manifest.list_downloads(self.batch_id)
                self.rows = {(r.part_name, r.file_name): r for r in rows}
            self.stop_if_short(await self.disk.shortfall(self._known_bytes_to_fetch()))
        if self.result.stopped is None:
            try:
                await self._pipeline(chosen)
            finally:
                self.flush.close()
        self.result.seconds = time.monotonic() - started
        self.result.refreshed = self.fetcher.refreshed
        self.log.info(
            "export.batch",
            batch_id=self.batch_id,
            output=str(self.output),
            downloaded=self.result.downloaded,
            skipped=self.result.skipped,
            failed=len(self.result.failed),
            unpacked=self.result.unpacked,
            bytes=self.result.bytes,
            seconds=round(self.result.seconds, 3),
            urls_refreshed=self.result.refreshed,
            stopped=self.result.stopped,
        )
        return self.result

    async def _make_output(self) -> str | None:
        """Create the output folder; a full disk is a reason to stop (returned), not a crash."""
        output = self.output

        def make() -> str | None:
            if output.exists() and not output.is_dir():
                raise ConfigError(f"output {output} exists and is not a folder")
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    return f"disk full while creating {output}: {exc.strerror}"
                raise ConfigError(f"cannot create output folder {output}: {exc.strerror}") from exc
            return None

        return await anyio.to_thread.run_sync(make)

    async def _parts(self, wanted: Sequence[str] | None) -> list[_Part]:
        client = self.services.client
        batch = await client.get_batch(self.batch_id)
        if batch.batch_type != MULTIPART:
            if wanted:
                raise ConfigError(
                    f"batch {self.batch_id} is a {batch.batch_type}: it has no parts to choose"
                )
            return [_Part(None, self.output)]
        names = [p.part_name for p in await client.list_parts(self.batch_id)]
        if wanted:
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                have = ", ".join(repr(n) for n in names) or "none"
                raise ConfigError(
                    f"batch {self.batch_id} has no part {', '.join(map(repr, unknown))} "
                    f"(its parts: {have})"
                )
            names = [n for n in names if n in set(wanted)]
        chosen: list[_Part] = []
        for name in dict.fromkeys(names):
            try:
                base = await anyio.to_thread.run_sync(safe_join, self.output, name)
            except UnsafePathError as exc:
                self._fail(name, None, f"part name refused: {exc}")
                continue
            chosen.append(_Part(name, base))
        return chosen

    def _known_bytes_to_fetch(self) -> int:
        # The listing announces no sizes; only sizes an earlier run saw are known up front.
        return sum(r.size or 0 for r in self.rows.values() if r.state != "done")

    async def _pipeline(self, chosen: list[_Part]) -> None:
        settings = self.settings
        page_tx, page_rx = anyio.create_memory_object_stream[tuple[_Part, list[FileMetadata]]](
            settings.prefetch_pages
        )
        item_tx, item_rx = anyio.create_memory_object_stream[Planned](settings.workers)
        # As many fetchers as download slots at most: a fetcher hands its file to the placer
        # and goes on at once (it used to wait for the group commit, which needed twice as
        # many fetchers as slots to keep the slots busy across a WAN).
        fetchers = settings.workers
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._list_pages, chosen, page_tx)
                tg.start_soon(self._plan, page_rx, item_tx)
                tg.start_soon(self.fetcher.placer.run)
                tg.start_soon(self._fetch_all, item_rx, fetchers)
        except BaseExceptionGroup as group:
            # One failing stage cancels the others; its error is the one callers expect.
            sole = _sole_error(group)
            if sole is None:
                raise
            raise sole from None

    def stop_if_short(self, shortfall: str | None) -> bool:
        """Stop the whole export (first reason wins) when the disk is short; True if stopped."""
        if shortfall is None:
            return False
        if self.result.stopped is None:
            self.result.stopped = shortfall
            self.log.error("export.stopped", batch_id=self.batch_id, reason=shortfall)
        if self._scope is not None:
            self._scope.cancel()
        return True

    # -- stage 1: listing -----------------------------------------------------------------

    async def _list_pages(
        self,
        chosen: list[_Part],
        out: ObjectSendStream[tuple[_Part, list[FileMetadata]]],
    ) -> None:
        client = self.services.client
        async with out:
            for part in chosen:
                self.relisters[part.name] = Relister(
                    client, self.batch_id, part.name, self.settings.page_size
                )
                pages = client.list_files(self.batch_id, part.name, self.settings.page_size)
                walk = pages.pages()
                async with contextlib.aclosing(walk):
                    async for page in walk:
                        self.progress.files_listed += len(page.items)
                        self._changed()
                        await out.send((part, page.items))
        self.progress.listing_done = True
        self._changed()

    # -- stage 2: planning ----------------------------------------------------------------

    async def _plan(
        self,
        pages: ObjectReceiveStream[tuple[_Part, list[FileMetadata]]],
        out: MemoryObjectSendStream[Planned],
    ) -> None:
        manifest = self.services.manifest
        async with pages, out:
            async for part, metas in pages:
                try:
                    plan = await anyio.to_thread.run_sync(self._plan_page_sync, part, metas)
                except OSError as exc:
                    if exc.errno not in DISK_FULL_ERRNOS:
                        raise
                    self.stop_if_short(
                        f"disk full while creating folders under {self.output}: {exc.strerror}"
                    )
                    return
                new = [
                    (part.name, item.file_name, None)
                    for item in plan.fetch
                    if (part.name or "", item.file_name) not in self.rows
                ]
                if new:
                    await manifest.add_downloads(self.batch_id, new)
                for meta, reason in plan.refused:
                    await manifest.mark_download(self.batch_id, part.name, meta.file_name, "failed")
                    self._fail(part.name, meta.file_name, reason)
                for item in plan.present:
                    row = self.rows.get((part.name or "", item.file_name))
                    if row is not None and row.state != "done":
                        await manifest.mark_download(
                            self.batch_id, part.name, item.file_name, "done"
                        )
                    self.result.skipped += 1
                    self.progress.files_skipped += 1
                    self._changed()
                relister = self.relisters[part.name]
                for item in plan.fetch:
                    relister.track(item.file_name)
                    # An await per item only when the fetchers are behind: each one is a trip
                    # through the event loop, and they add up over many small files.
                    try:
                        out.send_nowait(item)
                    except anyio.WouldBlock:
                        await out.send(item)

    def _plan_page_sync(self, part: _Part, metas: list[FileMetadata]) -> _PagePlan:
        """Where each file goes, and which are already there (blocking: stats and mkdirs)."""
        fetch: list[Planned] = []
        present: list[Planned] = []
        refused: list[tuple[FileMetadata, str]] = []
        root = SafeRoot(part.base)  # resolved once per page, not per file
        for meta in metas:
            try:
                dest = root.join(meta.file_name)
            except UnsafePathError as exc:
                refused.append((meta, str(exc)))
                continue
            try:
                self._prepare_folder(dest.parent)
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    raise  # not this file's fault: the whole export stops (see _plan)
                refused.append((meta, f"cannot create folder {dest.parent}: {exc.strerror}"))
                continue
            archive = self.unpack and is_archive(meta.file_name)
            row = self.rows.get((part.name or "", meta.file_name))
            item = Planned(
                part_name=part.name,
                meta=meta,
                dest=dest,
                unpack_into=dest.parent if archive else None,
                known_size=row.size if row is not None else None,
            )
            if not self.force and is_present(item, row):
                present.append(item)
            else:
                fetch.append(item)
        return _PagePlan(fetch, present, refused)

    def _prepare_folder(self, folder: Path) -> None:
        # Swept once, before any fetcher of this run writes there: what is left is a dead run's.
        if folder in self._prepared:
            return
        folder.mkdir(parents=True, exist_ok=True)
        # Watched before any file is written there (GroupFlush: syncfs reports the write-back
        # errors that happen after this).
        self.flush.watch(folder)
        removed = sweep_stale_temps(folder)
        if removed:
            self.log.info("export.swept", folder=str(folder), removed=removed)
        self._prepared.add(folder)

    # -- stage 3: fetching ----------------------------------------------------------------

    async def _fetch_all(self, items: MemoryObjectReceiveStream[Planned], fetchers: int) -> None:
        """Run the fetchers until the plan is done, then let the placer finish its queue."""
        async with items, anyio.create_task_group() as tg:
            for _ in range(fetchers):
                tg.start_soon(self._fetch_worker, items.clone())
        self.fetcher.placer.close()

    async def _fetch_worker(self, items: MemoryObjectReceiveStream[Planned]) -> None:
        async with items:
            while True:
                # Waits (a trip through the event loop) only when no item is ready.
                try:
                    item = items.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        item = await items.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                try:
                    await self._fetch_one(item)
                finally:
                    self.relisters[item.part_name].untrack(item.file_name)

    async def _fetch_one(self, item: Planned) -> None:
        if self.stop_if_short(await self.disk.shortfall(item.known_size or 0)):
            return
        try:
            await self.fetcher.fetch(item, self.relisters[item.part_name])
        except (OSError, RfbatchError) as exc:
            await self._place_failed(item, exc)

    async def _place_failed(self, item: Planned, exc: Exception) -> None:
        """Record why ``item`` is not in place (a full disk stops the whole export instead)."""
        if isinstance(exc, OSError):
            if exc.errno in DISK_FULL_ERRNOS:
                self.stop_if_short(f"disk full while writing under {self.output}: {exc.strerror}")
                return
            reason = f"local error: {exc}"
        elif isinstance(exc, (ConfigError, FatalError)) or not isinstance(exc, RfbatchError):
            raise exc
        else:
            reason = str(exc)
        manifest = self.services.manifest
        await manifest.mark_download(self.batch_id, item.part_name, item.file_name, "failed")
        self._fail(item.part_name, item.file_name, reason)

    def _placed(self, item: Planned, fetched: Fetched) -> None:
        self.result.downloaded += 1
        self.result.bytes += fetched.size
        if item.unpack_into is not None:
            self.result.unpacked += fetched.placed
        self.progress.files_downloaded += 1
        self._changed()
        self.log.debug(
            "export.file",
            batch_id=self.batch_id,
            part=item.part_name,
            file=item.file_name,
            bytes=fetched.size,
            placed=fetched.placed,
        )

    def _fail(self, part: str | None, file_name: str | None, reason: str) -> None:
        reason = redact_text(reason)
        self.result.failed.append(FileFailure(part, file_name, reason))
        self.progress.files_failed += 1
        self._changed()
        self.log.warning(
            "export.file_failed",
            batch_id=self.batch_id,
            part=part,
            file=file_name,
            reason=reason,
        )


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error inside a task group's exception group, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None
