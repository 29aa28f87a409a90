"""``rfbatch sync``: one pass of the whole loop — upload, confirm, run the job, wait, export.

The daemon with a finite source: the same upload pass, then the same job and export steps, each
idempotent, so a rerun after a crash (or after success) only does what is missing: nothing is
uploaded twice, the job start is a no-op for an identical definition, and the export fetches
only the files not already on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from rfbatch.app import Services
from rfbatch.ids import job_id_for_batch
from rfbatch.media import SourceSpec
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.confirm import expected_count
from rfbatch.pipeline.export import ExportResult, export_batches
from rfbatch.pipeline.jobs import JobOutcome, JobView, Wake, follow_job, job_spec_from, start_job
from rfbatch.pipeline.upload_pass import PassResult, UploadTarget, upload_and_confirm
from rfbatch.state.records import BatchKind


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
    wake_for: Callable[[str], Wake | None] = lambda _job: None,
    on_job_update: Callable[[JobView], None] | None = None,
) -> SyncResult:
    """Upload; then, when a workflow is set and ingest is confirmed, run and export its jobs."""
    result = SyncResult(await upload_and_confirm(services, specs, target, tally=tally))
    settings = services.settings
    if not settings.job.workflow_id or not all(c.confirmed for c in result.upload.confirmations):
        return result
    todo: list[tuple[str, BatchKind]] = []
    for batch_id, kind in ((target.image_batch, "images"), (target.video_batch, "videos")):
        if await expected_count(services.manifest, batch_id):
            todo.append((batch_id, kind))  # type: ignore[arg-type]

    async def run_one(batch_id: str, kind: BatchKind) -> None:
        job_id = job_id_for_batch(batch_id)
        spec = job_spec_from(settings.job, batch_id=batch_id, kind=kind)
        await start_job(services.client, job_id, spec)
        waker = wake_for(job_id)
        result.jobs[batch_id] = await follow_job(
            services.client,
            job_id,
            poll_seconds=(
                settings.job.poll_seconds_with_webhook if waker else settings.job.poll_seconds
            ),
            wake=waker,
            on_update=on_job_update,
            deadline_seconds=settings.job.wait_timeout_seconds,
        )

    async with anyio.create_task_group() as tg:
        for batch_id, kind in todo:
            tg.start_soon(run_one, batch_id, kind)

    if output_dir is not None:
        for batch_id, outcome in result.jobs.items():
            if not outcome.succeeded:
                continue
            exports = await export_batches(services, outcome.output_batches, output_dir / batch_id)
            result.exports += exports
            if any(e.stopped is not None for e in exports):
                break  # the disk is short: the next batch's results would not fit either
    return result
