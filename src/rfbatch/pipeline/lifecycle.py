"""What happens to a batch after it is sealed: confirm ingest, start its job, follow it, export.

Each step is recorded in the manifest's batch row before the next begins (``sealed →
confirmed → job_started → job_done → exported``, or ``failed``), so a restart resumes at the
step it was on: a started job is followed again, not started twice (and a start is idempotent on
the service anyway, its id derived from the batch id).

Both the daemon and ``rfbatch sync`` drive batches through this one machine; what differs between
them is given as parameters (where results go, what happens to source files, webhooks) and
hooks that hear what each step ended with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from rfbatch.api.schemas import ImageJobSpec, VideoJobSpec
from rfbatch.app import Services
from rfbatch.ids import job_id_for_batch
from rfbatch.localfs.after_ingest import Ingested, SourceCleanup
from rfbatch.pipeline.batches import InFlight
from rfbatch.pipeline.confirm import Confirmation, confirm_ingest, expected_count
from rfbatch.pipeline.jobs import (
    JobOutcome,
    JobView,
    definition_digest,
    follow_job,
    job_spec_from,
    start_job,
)
from rfbatch.state.records import BatchRow, BatchState

if TYPE_CHECKING:  # a one-shot upload only confirms: it should not load the server or export
    from rfbatch.pipeline.export import ExportResult, ProgressHook
    from rfbatch.webhooks import WebhookReceiver

log = structlog.get_logger("rfbatch.lifecycle")

# Keys of a batch row's ``info``: the digest of its job's definition, and the job that is to
# replace the recorded one.
JOB_DEFINITION = "job_definition"
NEXT_JOB = "next_job"

# The steps of a batch, in order (any of them may end in ``failed`` instead).
STEPS: tuple[BatchState, ...] = ("sealed", "confirmed", "job_started", "job_done", "exported")


@dataclass
class Lifecycle:
    """Takes batches through their steps.

    ``output_dir``: export results under ``<output_dir>/<batch>``; ``None`` stops at ``job_done``.
    ``source_cleanup``: what happens to source files once their ingest is confirmed.
    ``receiver``: wakes confirmation on the batch's ingest notifications; what it keeps for a
    batch or job is dropped once that step is done; it wakes job waits on their notifications.
    ``job_notifications_url``: where the service sends job notifications (else the settings').
    ``job_ids``: job ids an operator chose, by batch id (else derived from the batch id).
    The ``on_*`` hooks hear each step's outcome: ``on_job_update`` every poll of a job (its
    stages are only listed when it is set), ``on_ingest_count`` every count read while ingest
    is confirmed (batch, count, expected), ``on_export_progress`` the export's counters as files
    arrive, the others once per step taken.
    """

    services: Services
    in_flight: InFlight
    output_dir: Path | None = None
    source_cleanup: SourceCleanup | None = None
    receiver: WebhookReceiver | None = None
    job_notifications_url: str | None = None
    job_ids: Mapping[str, str] = field(default_factory=dict)
    on_confirmation: Callable[[Confirmation], None] | None = None
    on_ingest_count: Callable[[str, int, int], None] | None = None
    on_job_update: Callable[[JobView], None] | None = None
    on_job_end: Callable[[str, JobOutcome], None] | None = None
    on_export: Callable[[str, list[ExportResult]], None] | None = None
    on_export_progress: ProgressHook | None = None

    def active_states(self) -> list[BatchState]:
        """Batch states that still have a step to take under the current settings."""
        states: list[BatchState] = ["sealed"]
        if self.services.settings.job.workflow_id:
            states += ["confirmed", "job_started"]
            if self.output_dir is not None:
                states.append("job_done")
        return states

    async def advance(self, batch_id: str, *, stop_at: BatchState | None = None) -> None:
        """Take every step the batch is ready for; return when it is done or must wait, or
        once it has reached ``stop_at`` (or was already past it)."""
        states = self.active_states()
        if stop_at is not None:
            states = [s for s in states if s in STEPS[: STEPS.index(stop_at)]]
        manifest = self.services.manifest
        steps: dict[BatchState, Callable[[BatchRow], Awaitable[bool]]] = {
            "sealed": self._from_sealed,
            "confirmed": self._from_confirmed,
            "job_started": self._from_job_started,
            "job_done": self._from_job_done,
        }
        while True:
            row = await manifest.get_batch(batch_id)
            if row is None or row.state not in states:
                return
            if not await steps[row.state](row):
                return

    async def _from_sealed(self, row: BatchRow) -> bool:
        manifest = self.services.manifest
        if self.in_flight.pending(row.batch_id) or await self.services.fleet.busy(row.batch_id):
            return False  # files of this batch are still on their way (here or elsewhere)
        counts = await manifest.counts(row.batch_id)
        if counts["packed"] or counts["uploading"]:
            return False
        expected = await expected_count(manifest, row.batch_id)
        if expected == 0:
            # Every file was skipped or failed, or a drain was cut short before any was sent:
            # there is nothing to confirm or process, and nothing went wrong with the batch.
            await manifest.update_batch(row.batch_id, state="empty")
            log.info("batch.empty", batch=row.batch_id)
            return False
        cfg = self.services.settings.upload
        result = await confirm_ingest(
            self.services.client,
            manifest,
            row.batch_id,
            deadline_seconds=cfg.ingest_timeout_seconds,
            poll_interval=cfg.ingest_poll_seconds,
            settle_seconds=cfg.ingest_settle_seconds,
            receiver=self.receiver,
            on_count=(
                partial(self.on_ingest_count, row.batch_id)
                if self.on_ingest_count is not None
                else None
            ),
        )
        if self.on_confirmation is not None:
            self.on_confirmation(result)
        if not result.confirmed:
            return False  # tried again on the next round
        await manifest.update_batch(row.batch_id, state="confirmed", expected_count=expected)
        if self.receiver is not None:
            self.receiver.forget_batch(row.batch_id)  # a daemon runs for months: drop what is done
        await self._after_ingest(row.batch_id)
        return True

    def job_spec(self, row: BatchRow) -> ImageJobSpec | VideoJobSpec:
        """The definition of the job this batch gets under the current settings."""
        settings = self.services.settings
        return job_spec_from(
            settings.job,
            batch_id=row.batch_id,
            kind=row.kind,
            notifications_url=self.job_notifications_url or settings.job.notifications_url,
        )

    async def _from_confirmed(self, row: BatchRow) -> bool:
        # A batch confirmed again after more files came (``sync`` on a grown folder) may have
        # a job already: it is followed, never started twice. One whose job is to be replaced
        # (a changed definition, an operator's job id) names the next job in ``info``.
        planned = row.info.get(NEXT_JOB)
        if row.job_id is not None and not planned:
            await self.services.manifest.update_batch(row.batch_id, state="job_started")
            return True
        spec = self.job_spec(row)
        job_id = str(planned or self.job_ids.get(row.batch_id) or job_id_for_batch(row.batch_id))
        await start_job(self.services.client, job_id, spec)  # logs job.started
        await self.services.manifest.update_batch(
            row.batch_id,
            state="job_started",
            job_id=job_id,
            info={NEXT_JOB: None, JOB_DEFINITION: definition_digest(spec)},
        )
        return True

    async def _from_job_started(self, row: BatchRow) -> bool:
        settings = self.services.settings
        assert row.job_id is not None
        waker = self.receiver.job_waker(row.job_id) if self.receiver is not None else None
        outcome = await follow_job(  # logs job.done
            self.services.client,
            row.job_id,
            poll_seconds=(
                settings.job.poll_seconds_with_webhook if waker else settings.job.poll_seconds
            ),
            wake=waker,
            on_update=self.on_job_update,
            deadline_seconds=settings.job.wait_timeout_seconds,
        )
        if self.on_job_end is not None:
            self.on_job_end(row.batch_id, outcome)
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
        return True

    async def _from_job_done(self, row: BatchRow) -> bool:
        # Imported on first use, for the reason given at the top of the imports.
        from rfbatch.pipeline.export import export_batches

        assert self.output_dir is not None
        output = self.output_dir / row.batch_id
        outputs = [str(b) for b in row.info.get("outputs", [])]
        results = await export_batches(
            self.services, outputs, output, on_progress=self.on_export_progress
        )
        if self.on_export is not None:
            self.on_export(row.batch_id, results)
        if not all(r.complete for r in results):
            log.warning("export.incomplete", batch=row.batch_id)
            return False
        await self.services.manifest.update_batch(row.batch_id, state="exported")
        log.info(
            "batch.exported",
            batch=row.batch_id,
            files=sum(r.downloaded + r.skipped for r in results),
            output=str(output),
        )
        return True

    async def _after_ingest(self, batch_id: str) -> None:
        """Move or delete source files whose ingest is confirmed (never before)."""
        if self.source_cleanup is None:
            return
        files = [
            Ingested(r.path, r.rel)
            async for r in self.services.manifest.files_in_state(["ingested"], batch_id)
        ]
        done = await self.source_cleanup.apply(files)
        log.info("source.cleanup", batch=batch_id, action=self.source_cleanup.action, files=done)
