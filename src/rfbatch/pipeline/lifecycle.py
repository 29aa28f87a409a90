"""What happens to a batch after it is sealed: confirm ingest, start its job, follow it, export.

Each step is recorded in the manifest's batch row before the next begins (``sealed →
confirmed → job_started → job_done → exported``, or ``failed``), so a restart resumes at the
step it was on: a started job is followed again, not started twice (and a start is idempotent on
the service anyway, its id derived from the batch id).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
import structlog

from rfbatch.app import Services
from rfbatch.ids import job_id_for_batch
from rfbatch.pipeline.batches import InFlight
from rfbatch.pipeline.confirm import confirm_ingest, expected_count
from rfbatch.pipeline.export import export_batches
from rfbatch.pipeline.jobs import follow_job, job_spec_from, start_job
from rfbatch.state.records import BatchRow, BatchState
from rfbatch.webhooks import WebhookReceiver

log = structlog.get_logger("rfbatch.lifecycle")


@dataclass
class Lifecycle:
    services: Services
    in_flight: InFlight
    receiver: WebhookReceiver | None = None
    job_notifications_url: str | None = None

    def active_states(self) -> list[BatchState]:
        """Batch states that still have a step to take under the current settings."""
        states: list[BatchState] = ["sealed"]
        if self.services.settings.job.workflow_id:
            states += ["confirmed", "job_started"]
            if self.services.settings.daemon.output_dir is not None:
                states.append("job_done")
        return states

    async def advance(self, batch_id: str) -> None:
        """Take every step the batch is ready for; return when it is done or must wait."""
        manifest = self.services.manifest
        while True:
            row = await manifest.get_batch(batch_id)
            if row is None or row.state not in self.active_states():
                return
            steps: dict[str, Callable[[BatchRow], Awaitable[bool]]] = {
                "sealed": self._from_sealed,
                "confirmed": self._from_confirmed,
                "job_started": self._from_job_started,
                "job_done": self._from_job_done,
            }
            if not await steps[row.state](row):
                return

    async def _from_sealed(self, row: BatchRow) -> bool:
        manifest = self.services.manifest
        if self.in_flight.pending(row.batch_id):
            return False  # files of this batch are still on their way
        counts = await manifest.counts(row.batch_id)
        if counts["packed"] or counts["uploading"]:
            return False
        expected = await expected_count(manifest, row.batch_id)
        if expected == 0:
            # Every file was skipped or failed: there is nothing to confirm or process.
            await manifest.update_batch(row.batch_id, state="failed", info={"error": "no files"})
            log.warning("batch.empty", batch=row.batch_id)
            return False
        cfg = self.services.settings.upload
        result = await confirm_ingest(
            self.services.client,
            manifest,
            row.batch_id,
            deadline_seconds=cfg.ingest_timeout_seconds,
            poll_interval=cfg.ingest_poll_seconds,
        )
        if not result.confirmed:
            return False  # tried again on the next round
        await manifest.update_batch(row.batch_id, state="confirmed", expected_count=expected)
        await self._after_ingest(row.batch_id)
        return True

    async def _from_confirmed(self, row: BatchRow) -> bool:
        settings = self.services.settings
        job_id = row.job_id or job_id_for_batch(row.batch_id)
        spec = job_spec_from(
            settings.job,
            batch_id=row.batch_id,
            kind=row.kind,
            notifications_url=self.job_notifications_url or settings.job.notifications_url,
        )
        await start_job(self.services.client, job_id, spec)
        await self.services.manifest.update_batch(row.batch_id, state="job_started", job_id=job_id)
        log.info("job.started", batch=row.batch_id, job=job_id)
        return True

    async def _from_job_started(self, row: BatchRow) -> bool:
        settings = self.services.settings
        assert row.job_id is not None
        waker = self.receiver.job_waker(row.job_id) if self.receiver else None
        outcome = await follow_job(
            self.services.client,
            row.job_id,
            poll_seconds=(
                settings.job.poll_seconds_with_webhook if waker else settings.job.poll_seconds
            ),
            wake=waker,
            deadline_seconds=settings.job.wait_timeout_seconds,
        )
        if outcome.timed_out:
            return False
        if self.receiver is not None:
            self.receiver.forget_job(row.job_id)  # a daemon runs for months: drop what is done
        manifest = self.services.manifest
        if not outcome.succeeded:
            await manifest.update_batch(
                row.batch_id, state="failed", info={"error": outcome.message or "job failed"}
            )
            log.error("job.failed", batch=row.batch_id, job=row.job_id, message=outcome.message)
            return False
        await manifest.update_batch(
            row.batch_id, state="job_done", info={"outputs": list(outcome.output_batches)}
        )
        log.info("job.done", batch=row.batch_id, job=row.job_id, seconds=outcome.seconds)
        return True

    async def _from_job_done(self, row: BatchRow) -> bool:
        output_dir = self.services.settings.daemon.output_dir
        assert output_dir is not None
        outputs = [str(b) for b in row.info.get("outputs", [])]
        results = await export_batches(self.services, outputs, output_dir / row.batch_id)
        if not all(r.complete for r in results):
            log.warning("export.incomplete", batch=row.batch_id)
            return False
        await self.services.manifest.update_batch(row.batch_id, state="exported")
        log.info(
            "batch.exported",
            batch=row.batch_id,
            files=sum(r.downloaded + r.skipped for r in results),
            output=str(output_dir / row.batch_id),
        )
        return True

    async def _after_ingest(self, batch_id: str) -> None:
        """Move or delete source files whose ingest is confirmed (never before)."""
        cfg = self.services.settings.daemon
        if cfg.after_ingest == "keep":
            return
        rows = [r async for r in self.services.manifest.files_in_state(["ingested"], batch_id)]
        target = cfg.move_to

        def act() -> int:
            done = 0
            for r in rows:
                try:
                    if target is None:
                        os.unlink(r.path)
                    else:
                        dest = target / (r.rel or r.path.name)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(r.path, dest)
                    done += 1
                except FileNotFoundError:
                    continue  # already gone: nothing to do
                except OSError as exc:
                    log.warning("source.cleanup_failed", path=str(r.path), error=str(exc))
            return done

        done = await anyio.to_thread.run_sync(act)
        log.info("source.cleanup", batch=batch_id, action=cfg.after_ingest, files=done)
