"""``rfbatch run``: the whole loop, continuously, until a signal says stop.

Three groups of tasks share one process:

* intake — the watcher feeds the same stages a one-shot upload uses (select, settle, route,
  pack, upload workers), with batches rotated by time window and item count;
* lifecycle — every few seconds, each sealed batch is taken as far as it can go: ingest
  confirmed, job started, job followed, results exported (see :mod:`lifecycle`);
* service — the local HTTP server (health, readiness, metrics, webhooks), the rotation timer and
  the disk monitor that pauses intake below the free-space floor.

Stopping (:meth:`Daemon.drain`): the watcher stops, so the intake stages drain — files already
settled are packed and sent — while lifecycle steps are cancelled (they resume from the manifest
on the next start). :meth:`Daemon.abort`, or the end of the grace period, cancels what is left.

Debugging memory: started with ``PYTHONTRACEMALLOC=1`` (Python's own switch), the daemon writes
allocation snapshots to ``<state dir>/tracemalloc/``: ``first.tracemalloc`` once warmed up and
``latest.tracemalloc``, replaced every minute (two files, however long it runs). Compare them
with :meth:`tracemalloc.Snapshot.compare_to` to see what grows.
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from rfbatch import allocator
from rfbatch.app import Services
from rfbatch.errors import FatalError, UnresumableRowError
from rfbatch.localfs.after_ingest import SourceCleanup
from rfbatch.localfs.diskspace import free_bytes
from rfbatch.localfs.reading import still_as_recorded
from rfbatch.localfs.scan import split_found
from rfbatch.localfs.watch import WatchStatus, watch
from rfbatch.media import FoundFile, Skipped, SourceSpec
from rfbatch.obs.health import Readiness, health_app, serve_http
from rfbatch.obs.metrics import Metrics, MetricsSnapshot
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import InFlight, RotatingBatches
from rfbatch.pipeline.gate import Gate
from rfbatch.pipeline.lifecycle import Lifecycle
from rfbatch.pipeline.upload_pass import (
    release_in_flight,
    resumable,
    run_intake,
    upload_options,
)
from rfbatch.settings import Settings, split_host_port
from rfbatch.state.records import BATCH_STATES, FileRow
from rfbatch.webhooks import WebhookReceiver

log = structlog.get_logger("rfbatch.daemon")

MAX_BATCHES_IN_PROGRESS = 4
DISK_CHECK_SECONDS = 5.0
# Failed files offered again per worker-thread call.
RETRY_CHUNK = 512
# How often the daemon gives free heap memory back (rfbatch.allocator says why).
MALLOC_TRIM_SECONDS = 60.0

# How often the retention pass runs: hourly, or more often for a retention under two hours.
RETENTION_PASS_SECONDS = 3600.0
TRACEMALLOC_DIR = "tracemalloc"
TRACEMALLOC_FIRST_SECONDS = 180.0
TRACEMALLOC_EVERY_SECONDS = 60.0


def source_cleanup(settings: Settings) -> SourceCleanup | None:
    """What ``[daemon] after_ingest`` says to do with source files once ingest is confirmed."""
    cfg = settings.daemon
    if cfg.after_ingest == "keep":
        return None
    return SourceCleanup(cfg.move_to if cfg.after_ingest == "move" else None)


class Daemon:
    def __init__(
        self,
        services: Services,
        specs: Sequence[SourceSpec],
        *,
        receiver: WebhookReceiver | None = None,
        job_notifications_url: str | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.specs = list(specs)
        self.receiver = receiver
        self.tally = Tally(new_only=True)  # it sees its tree again on every rescan
        self.watch_status = WatchStatus()
        self.in_flight = InFlight()
        cfg = self.settings.daemon
        self.batches = RotatingBatches(
            services.manifest,
            services.fleet,
            prefix=cfg.batch_prefix,
            window_seconds=cfg.batch_window_seconds,
            max_items=cfg.batch_max_items,
            in_flight=self.in_flight,
        )
        self.lifecycle = Lifecycle(
            services,
            self.in_flight,
            output_dir=cfg.output_dir,
            source_cleanup=source_cleanup(self.settings),
            receiver=receiver,
            job_notifications_url=job_notifications_url,
        )
        # The receiver takes ingest notifications at the same URL as job notifications.
        self.upload_options = upload_options(
            self.settings, ingest_webhook_url=job_notifications_url if receiver else None
        )
        self.intake_gate = Gate()
        self._stop_watching = anyio.Event()
        self._draining = False
        self._cancel = anyio.CancelScope()
        self._lifecycle_scope = anyio.CancelScope()
        self._batch_states: dict[str, int] = {}
        self._ledger_files: dict[str, int] = {}
        self._fleet_workers: dict[str, int] = {}
        self._active: set[str] = set()

    # --- control ----------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """Stop intake and lifecycle; in-flight uploads finish within the grace period."""
        if self._draining:
            return
        self._draining = True
        log.info("daemon.draining", grace_seconds=self.settings.daemon.shutdown_grace_seconds)
        self._stop_watching.set()
        self.intake_gate.open()  # a paused intake must be able to drain too
        self._lifecycle_scope.cancel()
        self._cancel.deadline = anyio.current_time() + self.settings.daemon.shutdown_grace_seconds

    def abort(self) -> None:
        """Cancel everything now; the next start resumes from the manifest."""
        log.warning("daemon.aborting")
        self._cancel.cancel()

    # --- the run ----------------------------------------------------------------------------

    async def run(self) -> None:
        allocator.tune()
        # The key is checked before anything starts: a daemon with a wrong key would otherwise
        # look healthy until its first upload, which may be days away on a quiet source.
        await self.services.client.workspace()
        released = await release_in_flight(self.services.fleet)
        await self.batches.load()
        # Claimed before intake starts, so the first scan cannot route them anywhere else.
        resume = await resumable(released, self.specs, self.batches.join)
        for item in resume:
            self.in_flight.claim(item.file.path)
            self.in_flight.assign(item.batch_id)
        log.info(
            "daemon.started",
            sources=[str(s.root) for s in self.specs],
            resumed=len(released),
            resumed_into_their_batches=len(resume),
        )
        with self._cancel:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve_http)
                tg.start_soon(self._lifecycle_loop)
                tg.start_soon(self._rotation_timer)
                tg.start_soon(self._disk_monitor)
                tg.start_soon(self._retention_loop)
                if allocator.AVAILABLE:
                    tg.start_soon(self._malloc_trimmer)
                if tracemalloc.is_tracing():
                    tg.start_soon(self._tracemalloc_snapshots)
                await run_intake(
                    self.services,
                    self._watch_source,
                    batches=self.batches,
                    options=self.upload_options,
                    tally=self.tally,
                    in_flight=self.in_flight,
                    linger=self.settings.daemon.shard_linger_seconds,
                    resume=resume,
                )
                # Intake only ends when draining: the rest has nothing more to wait for.
                tg.cancel_scope.cancel()
        log.info("daemon.stopped", **self.tally.snapshot())

    async def _watch_source(
        self,
        found: MemoryObjectSendStream[list[FoundFile]],
        skipped: MemoryObjectSendStream[Skipped],
    ) -> None:
        scan = self.settings.scan
        async with found, skipped, anyio.create_task_group() as tg:
            tg.start_soon(self._retry_failed, found.clone())
            if self.services.fleet.shared:
                tg.start_soon(self._adopt_orphans, found.clone())
            async for chunk in watch(
                self.specs,
                force_polling=scan.force_polling or None,
                rescan_interval=scan.rescan_interval_seconds,
                full_rescan_interval=scan.full_rescan_interval_seconds,
                poll_interval=scan.poll_interval_seconds,
                events=scan.events,
                stop_event=self._stop_watching,
                status=self.watch_status,
            ):
                await self.intake_gate.wait_open()
                if self._stop_watching.is_set():
                    break
                files, skips = split_found(chunk)
                if files:
                    await found.send(files)
                for item in skips:
                    await skipped.send(item)
            tg.cancel_scope.cancel()

    async def _retry_failed(self, found: MemoryObjectSendStream[list[FoundFile]]) -> None:
        """Offer files whose upload failed again, every ``rescan_interval_seconds``.

        Quick rescans pass over folders that did not change, so they no longer bring back a
        file that failed (during an outage, say): this does, if the file is unchanged on disk.
        """

        async def offer(rows: list[FileRow]) -> None:
            files = await anyio.to_thread.run_sync(_unchanged_on_disk, rows)
            if files:
                await self.intake_gate.wait_open()
                await found.send(files)

        async with found:
            while True:
                await anyio.sleep(self.settings.scan.rescan_interval_seconds)
                # A page at a time: after a long outage there may be very many.
                rows: list[FileRow] = []
                async for row in self.services.manifest.files_in_state(["failed"]):
                    rows.append(row)
                    if len(rows) >= RETRY_CHUNK:
                        await offer(rows)
                        rows = []
                await offer(rows)

    async def _adopt_orphans(self, found: MemoryObjectSendStream[list[FoundFile]]) -> None:
        """Take over, every half lease, what a worker of the fleet left when it died: its lease
        lapsed, so its files are free; they are offered again if unchanged on disk."""
        fleet = self.services.fleet
        async with found:
            while True:
                await anyio.sleep(fleet.lease_seconds / 2)
                rows = await fleet.adopt(limit=RETRY_CHUNK)
                if rows:
                    log.warning("fleet.adopted", files=len(rows))
                files = await anyio.to_thread.run_sync(_unchanged_on_disk, rows)
                if files:
                    await self.intake_gate.wait_open()
                    await found.send(files)

    async def _lifecycle_loop(self) -> None:
        limiter = anyio.CapacityLimiter(MAX_BATCHES_IN_PROGRESS)
        poll = self.settings.daemon.lifecycle_poll_seconds
        states = self.lifecycle.active_states()
        with self._lifecycle_scope:
            async with anyio.create_task_group() as tg:
                while True:
                    # Claimed, so that in a fleet one worker drives each batch: one job start
                    # and one export per batch. A few more than run at once, so a batch that
                    # waits (its ingest, its job) does not hold the next one back.
                    claimed = await self.services.fleet.claim_batches(
                        states, 2 * MAX_BATCHES_IN_PROGRESS
                    )
                    for batch_id in claimed:
                        if batch_id not in self._active:
                            self._active.add(batch_id)
                            tg.start_soon(self._advance, batch_id, limiter)
                    await anyio.sleep(poll)

    async def _advance(self, batch_id: str, limiter: anyio.CapacityLimiter) -> None:
        try:
            async with limiter:
                await self.lifecycle.advance(batch_id)
        except FatalError:
            raise  # a bad key or a refused workspace stops the daemon (exit 3)
        except Exception as exc:  # one batch's trouble must not stop the others
            log.error("batch.step_failed", batch=batch_id, error=str(exc))
        finally:
            self._active.discard(batch_id)

    async def _rotation_timer(self) -> None:
        period = min(self.settings.daemon.batch_window_seconds / 4, 5.0)
        while True:
            await anyio.sleep(period)
            await self.batches.seal_expired()

    async def _disk_monitor(self) -> None:
        floor = self.settings.daemon.min_free_bytes
        while True:
            low = await anyio.to_thread.run_sync(self._low_disk, floor)
            if low and self.intake_gate.is_open and not self._draining:
                self.intake_gate.close()
                log.warning("intake.paused", reason=low)
            elif not low and not self.intake_gate.is_open:
                self.intake_gate.open()
                log.info("intake.resumed")
            await anyio.sleep(DISK_CHECK_SECONDS)

    async def _malloc_trimmer(self) -> None:
        while True:
            await anyio.sleep(MALLOC_TRIM_SECONDS)
            allocator.trim()  # on the event loop thread: a trim takes milliseconds

    async def _retention_loop(self) -> None:
        """Forget files that left the source and batches done, ``[state] retention_days`` on."""
        retention = self.settings.state.retention_days * 86400.0
        period = min(RETENTION_PASS_SECONDS, retention / 2)
        done = [s for s in BATCH_STATES if s != "open" and s not in self.lifecycle.active_states()]
        manifest = self.services.manifest
        while True:
            await anyio.sleep(period)
            gone = await manifest.forget(time.time() - retention, done_batch_states=done)
            if gone.files or gone.batches or gone.events:
                log.info("state.forgotten", **dataclasses.asdict(gone))

    async def _tracemalloc_snapshots(self) -> None:
        folder = self.settings.state.dir / TRACEMALLOC_DIR
        folder.mkdir(parents=True, exist_ok=True)
        await anyio.sleep(TRACEMALLOC_FIRST_SECONDS)
        name = "first.tracemalloc"
        while True:
            snapshot = tracemalloc.take_snapshot()
            await anyio.to_thread.run_sync(_dump_snapshot, snapshot, folder / name)
            log.info("tracemalloc.snapshot", path=str(folder / name))
            name = "latest.tracemalloc"
            await anyio.sleep(TRACEMALLOC_EVERY_SECONDS)

    def _low_disk(self, floor: int) -> str | None:
        for path in self._watched_disks():
            free = free_bytes(path)
            if free < floor:
                return f"{path} has {free} bytes free, under the floor of {floor}"
        return None

    def _watched_disks(self) -> list[Path]:
        disks = [self.settings.state.dir]
        if self.settings.daemon.output_dir is not None:
            disks.append(self.settings.daemon.output_dir)
        return disks

    # --- HTTP: health, readiness, metrics, webhooks ---------------------------------------------

    async def _serve_http(self) -> None:
        listen = self.settings.daemon.http_listen
        if not listen:
            await anyio.sleep_forever()
        host, port = split_host_port(listen)
        readiness = Readiness(
            {"api": self._check_api, "state": self._check_state, "disk": self._check_disk},
            notes=self._notes,
        )
        metrics = Metrics(self.snapshot)
        receiver = self.receiver
        mounts = [lambda app: receiver.add_to(app)] if receiver is not None else []
        app = health_app(readiness, metrics, before_metrics=self._refresh_states, mounts=mounts)
        async with serve_http(app, host, port) as url:
            log.info("http.listening", url=url)
            await anyio.sleep_forever()

    def _notes(self) -> dict[str, str]:
        """What an operator should know that does not make the daemon unready."""
        problem = self.watch_status.problem
        return {"watch": problem} if problem else {}

    async def _check_api(self) -> None:
        await self.services.client.list_batches(page_size=1).collect(limit=1)

    async def _check_state(self) -> None:
        await self.services.manifest.check_writable()

    async def _check_disk(self) -> None:
        low = await anyio.to_thread.run_sync(self._low_disk, self.settings.daemon.min_free_bytes)
        if low:
            raise RuntimeError(low)

    async def _refresh_states(self) -> None:
        """The ledger's totals (the whole fleet's, on a shared ledger), read once per scrape."""
        found = await self.services.fleet.fleet_status()
        self._batch_states = found.batches
        self._ledger_files = found.files
        if found.shared:
            live = sum(w.live for w in found.workers)
            self._fleet_workers = {"live": live, "gone": len(found.workers) - live}

    def snapshot(self) -> MetricsSnapshot:
        t = self.tally
        transfer = self.services.transfer.statistics()
        retries = dict(self.services.client.retry_counts)
        for reason, n in transfer.retries.items():
            retries[reason] = retries.get(reason, 0) + n
        states = self._batch_states
        jobs = {
            "running": states.get("job_started", 0),
            "succeeded": states.get("job_done", 0) + states.get("exported", 0),
        }
        webhooks: dict[str, int] = {}
        if self.receiver is not None:
            stats = self.receiver.statistics()
            webhooks = {"accepted": stats.accepted, "duplicate": stats.duplicates}
            for reason, n in stats.rejected.items():
                webhooks[f"rejected_{reason}"] = n
        return MetricsSnapshot(
            files={
                "discovered": t.found,
                "uploaded": t.sent,
                "skipped": t.skipped_count,
                "failed": t.failed_count,
                "unchanged": t.unchanged,
            },
            bytes_up=transfer.bytes_sent,
            bytes_down=transfer.bytes_received,
            shards=t.shards,
            retries=retries,
            queue_depth={"in_flight_files": self.in_flight.total},
            in_flight={"batches_in_progress": len(self._active)},
            batches=states,
            jobs=jobs,
            webhook_events=webhooks,
            intake_paused=not self.intake_gate.is_open,
            watch_polling=self.watch_status.polling,
            watch_limit_reached=self.watch_status.problem is not None,
            ledger_files=self._ledger_files,
            fleet_workers=self._fleet_workers,
            concurrency={
                direction: slots.limit
                for direction, slots in (
                    ("put", self.services.transfer.put_slots),
                    ("download", self.services.transfer.download_slots),
                )
                if slots is not None
            },
        )


def _unchanged_on_disk(rows: Sequence[FileRow]) -> list[FoundFile]:
    """The files of ``rows`` still on disk as the manifest recorded them (blocking: stats)."""
    out: list[FoundFile] = []
    for row in rows:
        try:
            file = row.to_found()
        except UnresumableRowError:
            continue
        if still_as_recorded(file):
            out.append(file)
    return out


def _dump_snapshot(snapshot: tracemalloc.Snapshot, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    snapshot.dump(str(tmp))
    tmp.replace(path)
