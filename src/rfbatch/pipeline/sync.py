"""``rfbatch sync``: one pass of the whole loop — upload, confirm, run the job, wait, export.

The daemon with a finite source: the same upload pass, then each batch taken through the same
steps (:class:`Lifecycle`), each recorded in the manifest before the next, so a rerun after a
crash (or after success) only does what is missing: nothing is uploaded twice, a started job is
followed again but never started twice, and the export fetches only the files not already on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog

from rfbatch.app import Services
from rfbatch.ids import job_id_for_batch
from rfbatch.media import SourceSpec
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import InFlight
from rfbatch.pipeline.export import ExportResult, ProgressHook
from rfbatch.pipeline.jobs import JobOutcome, JobView, definition_digest
from rfbatch.pipeline.lifecycle import JOB_DEFINITION, NEXT_JOB, Lifecycle
from rfbatch.pipeline.upload_pass import PassResult, UploadTarget, upload_and_confirm
from rfbatch.state.records import BatchRow, BatchState

if TYPE_CHECKING:  # the webhook server is loaded only by a sync that listens
    from rfbatch.webhooks import WebhookReceiver

log = structlog.get_logger("rfbatch.sync")

# Batch states after a job's end.
_JOB_ENDED: frozenset[BatchState] = frozenset({"job_done", "exported", "failed"})


def default_batch_id(sources: Sequence[Path]) -> str:
    """A batch id derived from the source folders: the same folders give the same batch."""
    first = re.sub(r"[^a-z0-9_-]+", "-", sources[0].resolve().name.lower()).strip("-_")[:40]
    # fsencode: a folder name need not be valid UTF-8 on Linux.
    digest = hashlib.sha256(b"\0".join(os.fsencode(s.resolve()) for s in sources)).hexdigest()
    return f"{first or 'sync'}-{digest[:10]}"


@dataclass
class SyncResult:
    upload: PassResult
    jobs: dict[str, JobOutcome] = field(default_factory=dict)  # by input batch id
    exports: list[ExportResult] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase, in order: ``upload``, ``confirm``, then ``job`` and ``export``."""

    @property
    def complete(self) -> bool:
        return (
            self.upload.complete
            and all(o.succeeded for o in self.jobs.values())
            and all(e.complete for e in self.exports)
        )


async def sync(
    services: Services,
    specs: Sequence[SourceSpec],
    target: UploadTarget,
    *,
    output_dir: Path | None,
    tally: Tally | None = None,
    receiver: WebhookReceiver | None = None,
    on_job_update: Callable[[JobView], None] | None = None,
    job_ids: Mapping[str, str] | None = None,
    on_export_progress: ProgressHook | None = None,
) -> SyncResult:
    """Upload; then, when a workflow is set and ingest is confirmed, run and export its jobs.

    A ``receiver`` (``--webhook-listen``) wakes both the ingest confirmation and the job waits.
    ``job_ids`` are the operator's job ids by batch id (``--job-id``).
    """
    uploaded = await upload_and_confirm(services, specs, target, tally=tally, receiver=receiver)
    result = SyncResult(uploaded, phases=dict(uploaded.phases))
    if not services.settings.job.workflow_id or not all(
        c.confirmed for c in result.upload.confirmations
    ):
        return result

    def exported(_batch_id: str, exports: list[ExportResult]) -> None:
        result.exports.extend(exports)

    lifecycle = Lifecycle(
        services,
        InFlight(),
        output_dir=output_dir,
        receiver=receiver,
        on_job_update=on_job_update,
        job_ids=job_ids or {},
        on_export_progress=on_export_progress,
        on_job_end=result.jobs.__setitem__,
        on_export=exported,
    )
    await _follow_again(lifecycle, result.upload.batches)
    # The jobs run side by side; the exports one batch after another.
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for batch_id in result.upload.batches:
            tg.start_soon(partial(lifecycle.advance, batch_id, stop_at="job_done"))
    result.phases["job"] = time.monotonic() - started
    started = time.monotonic()
    for batch_id in result.upload.batches:
        if any(e.stopped is not None for e in result.exports):
            break  # the disk is short: the next batch's results would not fit either
        await lifecycle.advance(batch_id)
    result.phases["export"] = time.monotonic() - started
    return result


async def _follow_again(lifecycle: Lifecycle, batch_ids: Sequence[str]) -> None:
    """Take batches whose job ended in an earlier run back to following it, or to a new job.

    The recorded job's outcome is this run's to report (a failed job stays failed; one that
    succeeded costs a poll, and its export fetches only what is missing); it is never started
    again. A new job replaces it when the operator names another job id, or when the job
    definition changed (a corrected workflow, say): it gets a job id of its own (never the old
    one's 409), its results go to folders of its own, and the switch is logged.
    """
    manifest = lifecycle.services.manifest
    for batch_id in batch_ids:
        row = await manifest.get_batch(batch_id)
        if row is None or row.job_id is None:
            continue
        replacement = _replacement_job(lifecycle, row)
        ended = row.state in _JOB_ENDED
        if replacement is not None and not ended:
            log.warning(
                "job.kept",
                batch=batch_id,
                job=row.job_id,
                reason=f"still running; abort it (rfbatch job abort {row.job_id}) to start "
                f"{replacement} instead",
            )
        elif replacement is not None:
            log.warning("job.replaced", batch=batch_id, job=row.job_id, next_job=replacement)
            await manifest.update_batch(batch_id, state="confirmed", info={NEXT_JOB: replacement})
        elif ended:
            await manifest.update_batch(batch_id, state="job_started")


def _replacement_job(lifecycle: Lifecycle, row: BatchRow) -> str | None:
    """The job that is to replace ``row``'s recorded one, if any."""
    chosen = lifecycle.job_ids.get(row.batch_id)
    if chosen is not None:
        return chosen if chosen != row.job_id else None
    recorded = row.info.get(JOB_DEFINITION)
    digest = definition_digest(lifecycle.job_spec(row))
    if recorded is None or recorded == digest:
        return None  # the same job (or one started before definitions were recorded)
    return job_id_for_batch(row.batch_id, digest)
