"""The jobs of the emulated workspace and the clock that moves them: start, abort, restart.

A workflow job runs two stages on the ``job_tick`` clock. ``processing`` has one task per
:data:`ITEMS_PER_TASK` input items; each tick, up to ``maxParallelTasks`` running tasks advance by
``1 / TICKS_PER_TASK``. When every task is done the results are written (see
:mod:`job_outputs`), ``export`` runs one task per results file, and the job ends with
``isTerminal=true, error=false`` and the job webhook fires. A TRT compilation job runs one
``compilation`` stage and has no outputs.

Test hook: a ``workflowId`` that starts with ``fail`` makes the first processing task fail half
way: the job ends with ``isTerminal=true, error=true`` and a ``lastNotification`` whose
``message`` says why; the webhook says ``job_state: "fail"``.

Aborting sets ``isTerminal=true, error=true`` (an aborted job has no results) and is idempotent.
Restart is allowed for failed and aborted jobs: overrides accumulate in
``restartParametersOverride`` and the job runs again from the first stage.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from rfbatch.emulator.job_model import TRT_TYPE, Job, Stage, Task
from rfbatch.emulator.job_outputs import ensure_output_batch, write_export, write_results
from rfbatch.emulator.job_requests import JobRequestError, validate_job, validate_override
from rfbatch.emulator.model import Item, utcnow

if TYPE_CHECKING:
    from rfbatch.emulator.core import EmulatorCore

ITEMS_PER_TASK = 100
TICKS_PER_TASK = 3

# How a job ended early shows on the stages and tasks it cut short: (statusType, event verb).
_CUT_SHORT = {"aborted": ("aborted", "aborted"), "failed": ("error", "failed")}


class JobEngine:
    def __init__(self, core: EmulatorCore) -> None:
        self._core = core
        self.jobs: dict[str, Job] = {}
        self.order: list[Job] = []

    def snapshot(self) -> dict[str, Any]:
        return {job.job_id: job.snapshot() for job in self.order}

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def add(self, job: Job) -> None:
        """Take a job in (a new one, or one saved by an earlier run), newest last."""
        self.jobs[job.job_id] = job
        self.order.append(job)

    def start(self, job_id: str, body: Any, name: str | None) -> tuple[Job, bool]:
        """Create and start a job; returns (job, created). Identical repeats are idempotent."""
        existing = self.jobs.get(job_id)
        if existing is not None:
            if _canonical(existing.definition) == _canonical(body):
                return existing, False
            raise JobRequestError(f"job {job_id!r} already exists with a different definition", 409)
        validate_job(self._core.store, job_id, body)
        job = Job(job_id=job_id, name=name or job_id, definition=body)
        self.add(job)
        job.log("info", "job-created", {"message": "job accepted", "jobId": job_id})
        self._launch(job)
        return job, True

    def abort(self, job: Job) -> None:
        self._end_early(job, "aborted", "job aborted", "Job aborted by user.")

    def fail_now(self, job: Job, message: str) -> None:
        """Test hook: end a running job as failed, as a failing workflow would."""
        self._end_early(job, "failed", message, message)

    def restart(self, job: Job, override: dict[str, Any] | None) -> None:
        if job.state not in ("failed", "aborted"):
            raise JobRequestError(
                f"job {job.job_id!r} is {job.state}; only failed or aborted jobs restart"
            )
        if override is not None:
            job.overrides.append(validate_override(override))
        job.state = "running"
        job.last_notification = {"type": "job-restarted", "message": "Job restarted."}
        job.last_update = utcnow()
        self._run_again(job, "info", "job-restarted", {"overrides": override or {}})

    def resume(self, job: Job) -> None:
        """Run again, from the first stage, a job that was running when the emulator stopped."""
        self._run_again(
            job, "warning", "job-resumed", {"message": "the emulator restarted; job runs again"}
        )

    def _run_again(self, job: Job, severity: str, log_type: str, payload: dict[str, Any]) -> None:
        """Forget the stages of the last run and run ``job`` from its first stage."""
        job.stages = []
        job.current_stage = None
        job.log(severity, log_type, payload)
        self._launch(job)

    def _end_early(self, job: Job, state: str, message: str, job_message: str) -> None:
        """Stop a running job as ``state``, closing every open stage and task with ``message``."""
        if job.is_terminal:
            return
        if job.runner is not None:
            job.runner.cancel()
        status_type, verb = _CUT_SHORT[state]
        for stage in job.stages:
            for task in stage.tasks:
                if not task.terminal:
                    task.close(status_type, {"type": f"task-{verb}", "message": message})
            if stage.status_type == "info":
                stage.close(status_type, {"type": f"stage-{verb}", "message": message})
        self._finish(job, state, {"type": f"job-{verb}", "message": job_message})

    def _launch(self, job: Job) -> None:
        job.runner = self._core.tasks.spawn(self._run(job))

    async def _run(self, job: Job) -> None:
        try:
            if job.definition.get("type") == TRT_TYPE:
                await self._run_stage(job, "compilation", [[]], [])
                self._finish(
                    job, "succeeded", {"type": "job-completed", "message": "Job finished."}
                )
                return
            inputs = self._inputs(job)
            chunks = [inputs[i : i + ITEMS_PER_TASK] for i in range(0, len(inputs), ITEMS_PER_TASK)]
            processing_id, export_id = job.output_batches
            ok = await self._run_stage(job, "processing", chunks or [[]], [processing_id])
            if not ok:
                return
            results = await write_results(self._core, job, processing_id, chunks)
            await self._run_stage(job, "export", [[] for _ in results] or [[]], [export_id])
            await write_export(self._core, job, export_id, results)
            self._finish(
                job,
                "succeeded",
                {
                    "type": "job-completed",
                    "message": "Job finished successfully.",
                    "resultsBatches": [export_id],
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the emulator must still end the job visibly
            self._finish(job, "failed", {"type": "job-failed", "message": f"internal error: {exc}"})
            raise

    def _inputs(self, job: Job) -> list[Item]:
        job_input = job.definition["jobInput"]
        batch = self._core.store.get(job_input["batchId"])
        if batch is None:
            return []
        return list(batch.listing(job_input.get("partName")))

    async def _run_stage(
        self, job: Job, stage_id: str, chunks: list[list[Item]], outputs: list[str]
    ) -> bool:
        """Run one stage to its end on the clock; False when it failed the job."""
        tasks = [Task(f"{stage_id}-task-{i:04d}", chunk) for i, chunk in enumerate(chunks)]
        stage = Stage(stage_id, tasks, outputs)
        job.stages.append(stage)
        job.current_stage = stage_id
        job.last_update = utcnow()
        job.last_notification = {"type": "stage-started", "message": f"Stage {stage_id} started."}
        job.log("info", "stage-started", {"tasks": len(tasks)}, stage=stage_id)
        for output in outputs:
            ensure_output_batch(self._core.store, job, output)
        should_fail = stage_id == "processing" and str(
            job.definition.get("processingSpecification", {}).get("workflowId", "")
        ).startswith("fail")
        step = 1.0 / TICKS_PER_TASK
        while not all(t.terminal for t in tasks):
            await asyncio.sleep(self._core.config.job_tick)
            limit = job.max_parallel() or len(tasks)
            active = [t for t in tasks if not t.terminal][:limit]
            for task in active:
                task.progress = min(1.0, (task.progress or 0.0) + step)
                task.event_ts = utcnow()
                task.notification = {"type": "task-progress", "progress": task.progress}
                if should_fail and task.progress >= 0.5:
                    self._fail(job, stage, task)
                    return False
                if task.progress >= 1.0:
                    task.close("success", {"type": "task-completed", "message": "Task finished."})
                    job.log(
                        "info",
                        "task-completed",
                        {"items": len(task.inputs)},
                        stage=stage_id,
                        task=task.task_id,
                    )
            stage.last_event_ts = utcnow()
            job.last_update = stage.last_event_ts
        stage.close(
            "success", {"type": "stage-completed", "message": f"Stage {stage_id} finished."}
        )
        job.log("info", "stage-completed", {}, stage=stage_id)
        return True

    def _fail(self, job: Job, stage: Stage, task: Task) -> None:
        """The ``fail*`` workflow hook: ``task`` fails, and with it its stage and the job."""
        workflow = job.definition["processingSpecification"]["workflowId"]
        message = (
            f"Workflow {workflow!r} failed on task {task.task_id}: the emulator fails every "
            "workflow whose id starts with 'fail'."
        )
        task.close("error", {"type": "task-failed", "message": message})
        stage.close("error", {"type": "stage-failed", "message": message})
        job.log(
            "error", "task-failed", {"message": message}, stage=stage.stage_id, task=task.task_id
        )
        self._finish(job, "failed", {"type": "job-failed", "message": message})

    def _finish(self, job: Job, state: str, notification: dict[str, Any]) -> None:
        job.state = state
        job.last_notification = notification
        job.last_update = utcnow()
        job.runner = None
        severity = "info" if state == "succeeded" else "warning" if state == "aborted" else "error"
        job.log(severity, f"job-{state}", notification)
        url = job.definition.get("notificationsURL")
        if isinstance(url, str) and url:
            self._core.webhooks.send(
                url,
                {
                    "type": "roboflow-batch-job-notification-v1",
                    "job_id": job.job_id,
                    "job_state": "success" if state == "succeeded" else "fail",
                },
            )


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
