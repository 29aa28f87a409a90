"""Batch jobs: validation, the stage/task clock, outputs, abort, restart, logs, webhooks.

A workflow job runs two stages on the ``job_tick`` clock. ``processing`` has one task per
:data:`ITEMS_PER_TASK` input items; each tick, up to ``maxParallelTasks`` running tasks advance by
``1 / TICKS_PER_TASK``. When every task is done, one results file per task is written to the
``results`` part of the multipart batch ``<job>-processing`` (JSONL, or CSV when
``aggregationFormat`` is ``csv``): one record per input item with its file name, its SHA-256 and
a fake prediction derived from both (so the same input always gives the same output). Then
``export`` packs each results file into a ``.tar.gz`` in the ``results`` part of
``<job>-export``. The job ends with ``isTerminal=true, error=false`` and the job webhook fires.

Test hook: a ``workflowId`` that starts with ``fail`` makes the first processing task fail half
way: the job ends with ``isTerminal=true, error=true`` and a ``lastNotification`` whose
``message`` says why; the webhook says ``job_state: "fail"``.

Aborting sets ``isTerminal=true, error=true`` (an aborted job has no results) and is idempotent.
Restart is allowed for failed and aborted jobs: overrides accumulate in
``restartParametersOverride`` and the job runs again from the first stage.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rfbatch.emulator.model import Batch, Item, Part, iso, utcnow

if TYPE_CHECKING:
    from rfbatch.emulator.core import EmulatorCore

ITEMS_PER_TASK = 100
TICKS_PER_TASK = 3
JOB_ID_RE = re.compile(r"^[a-z0-9_-]{1,20}$")

WORKFLOW_TYPES = {
    "simple-image-processing-v1": "images",
    "simple-video-processing-v1": "videos",
}
TRT_TYPE = "trt-compilation-v1"
TRT_DEVICES = frozenset({"nvidia-l4", "nvidia-t4", "nvidia-l40s"})
WORKFLOW_KEYS = frozenset(
    {
        "type",
        "jobInput",
        "computeConfiguration",
        "processingTimeoutSeconds",
        "maxParallelTasks",
        "maxImageFailureRate",
        "processingSpecification",
        "notificationsURL",
        "inferenceBackend",
    }
)
SPEC_KEYS = frozenset(
    {
        "type",
        "workspace",
        "workflowId",
        "workflowParameters",
        "imageInputName",
        "persistImagesOutputs",
        "imagesOutputsToBePersisted",
        "aggregationFormat",
        "maxVideoFPS",
        "imagesMetadataInputsMapping",
    }
)
OVERRIDE_KEYS = frozenset(
    {
        "type",
        "computeConfiguration",
        "maxParallelTasks",
        "processingTimeoutSeconds",
        "maxImageFailureRate",
    }
)
RESULTS_PART = "results"


class JobRequestError(ValueError):
    """The request is wrong; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Task:
    task_id: str
    inputs: list[Item]
    progress: float | None = None
    status_type: str = "info"
    notification: dict[str, Any] = field(default_factory=lambda: {"type": "task-queued"})
    event_ts: datetime = field(default_factory=utcnow)

    def wire(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "notification": self.notification,
            "statusType": self.status_type,
            "progress": self.progress,
            "eventTimestamp": iso(self.event_ts),
        }

    @property
    def terminal(self) -> bool:
        return self.status_type != "info"


@dataclass
class Stage:
    stage_id: str
    tasks: list[Task]
    output_batches: list[str]
    status_type: str = "info"
    notification: dict[str, Any] = field(default_factory=lambda: {"type": "stage-started"})
    start_ts: datetime = field(default_factory=utcnow)
    last_event_ts: datetime = field(default_factory=utcnow)

    def wire(self) -> dict[str, Any]:
        return {
            "processingStageId": self.stage_id,
            "processingStageName": self.stage_id,
            "tasksNumber": max(1, len(self.tasks)),
            "outputBatches": self.output_batches,
            "startTimestamp": iso(self.start_ts),
            "notification": self.notification,
            "statusType": self.status_type,
            "lastEventTimestamp": iso(self.last_event_ts),
        }


@dataclass
class LogEntry:
    created: datetime
    severity: str
    log_type: str
    payload: dict[str, Any]
    stage_id: str | None = None
    task_id: str | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "createdAt": iso(self.created),
            "severity": self.severity,
            "reportingModule": "rfbatch-emulator",
            "logType": self.log_type,
            "payload": self.payload,
        }
        if self.stage_id is not None:
            body["processingStageId"] = self.stage_id
        if self.task_id is not None:
            body["taskId"] = self.task_id
        return body


@dataclass
class Job:
    job_id: str
    name: str
    definition: dict[str, Any]
    created: datetime = field(default_factory=utcnow)
    last_update: datetime = field(default_factory=utcnow)
    state: str = "running"  # running | succeeded | failed | aborted
    current_stage: str | None = None
    stages: list[Stage] = field(default_factory=list)
    last_notification: dict[str, Any] | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state != "running"

    @property
    def planned_stages(self) -> list[str]:
        if self.definition.get("type") == TRT_TYPE:
            return ["compilation"]
        return ["processing", "export"]

    @property
    def output_batches(self) -> list[str]:
        if self.definition.get("type") == TRT_TYPE:
            return []
        return [f"{self.job_id}-processing", f"{self.job_id}-export"]

    def wire(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "name": self.name,
            "jobDefinition": self.definition,
            "currentStage": self.current_stage,
            "plannedStages": self.planned_stages,
            "error": self.state in ("failed", "aborted"),
            "isTerminal": self.is_terminal,
            "lastNotification": self.last_notification,
            "createdAt": iso(self.created),
            "lastUpdate": iso(self.last_update),
            "restartParametersOverride": self.overrides,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "currentStage": self.current_stage,
            "definition": self.definition,
            "outputBatches": self.output_batches,
            "restartParametersOverride": self.overrides,
        }

    def log(
        self,
        severity: str,
        log_type: str,
        payload: dict[str, Any],
        *,
        stage: str | None = None,
        task: str | None = None,
    ) -> None:
        self.logs.append(LogEntry(utcnow(), severity, log_type, payload, stage, task))

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.stage_id == stage_id), None)

    def max_parallel(self) -> int | None:
        value = self.definition.get("maxParallelTasks")
        for override in self.overrides:
            value = override.get("maxParallelTasks", value)
        return int(value) if isinstance(value, int) and value > 0 else None


# validation ---------------------------------------------------------------------------------


def _require_obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise JobRequestError(f'"{key}" is required and must be an object')
    return value


def _check_rate(value: Any, key: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise JobRequestError(f'"{key}" must be a number between 0.0 and 1.0')


def _check_positive(value: Any, key: str, *, integer: bool) -> None:
    if value is None:
        return
    numeric = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not numeric or value <= 0:
        raise JobRequestError(f'"{key}" must be a positive {"integer" if integer else "number"}')


def _check_compute(compute: dict[str, Any]) -> None:
    if compute.get("type") not in ("compute-configuration-v2", "compute-configuration-v1"):
        raise JobRequestError('"computeConfiguration.type" must be "compute-configuration-v2"')
    if compute.get("machineType") not in (None, "cpu", "gpu"):
        raise JobRequestError('"computeConfiguration.machineType" must be "cpu" or "gpu"')
    _check_positive(compute.get("workersPerMachine"), "workersPerMachine", integer=True)


def _check_notifications_url(body: dict[str, Any]) -> None:
    url = body.get("notificationsURL")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise JobRequestError('"notificationsURL" must be an http(s) URL')


def validate_job(core: EmulatorCore, job_id: str, body: Any) -> None:
    """Raise :class:`JobRequestError` unless ``body`` is a job the emulator can run."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise JobRequestError("job id must match ^[a-z0-9_-]{1,20}$")
    if not isinstance(body, dict):
        raise JobRequestError('"value" must be an object')
    job_type = body.get("type")
    if job_type == TRT_TYPE:
        if not isinstance(body.get("modelId"), str) or not body["modelId"]:
            raise JobRequestError('"modelId" is required')
        devices = body.get("compilationDevices")
        if not isinstance(devices, list) or not devices or not set(devices) <= TRT_DEVICES:
            raise JobRequestError(
                '"compilationDevices" must list devices from ' + str(sorted(TRT_DEVICES))
            )
        _check_notifications_url(body)
        return
    if job_type not in WORKFLOW_TYPES:
        raise JobRequestError('"value" does not match any of the allowed types')
    unknown = set(body) - WORKFLOW_KEYS
    if unknown:
        raise JobRequestError(f'"{sorted(unknown)[0]}" is not allowed')
    job_input = _require_obj(body, "jobInput")
    _check_compute(_require_obj(body, "computeConfiguration"))
    spec = _require_obj(body, "processingSpecification")
    if job_input.get("type") != "staging-batch-input-v1":
        raise JobRequestError('"jobInput.type" must be "staging-batch-input-v1"')
    if spec.get("type") != "workflows-processing-specification-v1":
        raise JobRequestError(
            '"processingSpecification.type" must be "workflows-processing-specification-v1"'
        )
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise JobRequestError(f'"processingSpecification.{sorted(unknown)[0]}" is not allowed')
    for key in ("workspace", "workflowId"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise JobRequestError(f'"processingSpecification.{key}" is required')
    if spec.get("aggregationFormat") not in (None, "csv", "jsonl"):
        raise JobRequestError('"aggregationFormat" must be "csv" or "jsonl"')
    _check_rate(body.get("maxImageFailureRate"), "maxImageFailureRate")
    _check_positive(body.get("processingTimeoutSeconds"), "processingTimeoutSeconds", integer=False)
    _check_positive(body.get("maxParallelTasks"), "maxParallelTasks", integer=True)
    _check_notifications_url(body)
    batch_id = job_input.get("batchId")
    if not isinstance(batch_id, str):
        raise JobRequestError('"jobInput.batchId" is required')
    batch = core.store.get(batch_id)
    if batch is None:
        raise JobRequestError(f"input batch {batch_id!r} does not exist")
    part = job_input.get("partName")
    if part is not None and not isinstance(part, str):
        raise JobRequestError('"jobInput.partName" must be a string')
    if batch.count(part) == 0:
        raise JobRequestError(f"input batch {batch_id!r} is empty")
    want = WORKFLOW_TYPES[job_type]
    if batch.batch_type != "multipart-batch" and batch.content_type != want:
        raise JobRequestError(
            f"job type {job_type!r} needs a batch of {want}, batch {batch_id!r} holds "
            f"{batch.content_type}"
        )


def validate_override(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise JobRequestError('"value" must be an object')
    if body.get("type") != "parameters-override-v1":
        raise JobRequestError('"type" must be "parameters-override-v1"')
    unknown = set(body) - OVERRIDE_KEYS
    if unknown:
        raise JobRequestError(f'"{sorted(unknown)[0]}" is not allowed')
    if "computeConfiguration" in body:
        compute = body["computeConfiguration"]
        if not isinstance(compute, dict):
            raise JobRequestError('"computeConfiguration" must be an object')
        _check_compute(compute)
    _check_rate(body.get("maxImageFailureRate"), "maxImageFailureRate")
    _check_positive(body.get("processingTimeoutSeconds"), "processingTimeoutSeconds", integer=False)
    _check_positive(body.get("maxParallelTasks"), "maxParallelTasks", integer=True)
    return body


# results ------------------------------------------------------------------------------------


def fake_prediction(workflow_id: str, name: str, sha256: str) -> dict[str, Any]:
    """A deterministic stand-in for a model output, derived from the input and the workflow."""
    seed = hashlib.sha256(f"{workflow_id}\n{name}\n{sha256}".encode()).digest()
    classes = ("car", "person", "dog", "bicycle")
    return {
        "class": classes[seed[0] % len(classes)],
        "confidence": round(0.5 + seed[1] / 512, 4),
        "x": seed[2],
        "y": seed[3],
        "width": 1 + seed[4],
        "height": 1 + seed[5],
    }


def render_results(workflow_id: str, items: list[tuple[str, str, int]], fmt: str) -> bytes:
    rows = [
        {
            "file_name": name,
            "sha256": sha,
            "size": size,
            "workflow_id": workflow_id,
            "predictions": [fake_prediction(workflow_id, name, sha)],
        }
        for name, sha, size in items
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file_name", "sha256", "size", "workflow_id", "predictions"])
        for row in rows:
            writer.writerow(
                [
                    row["file_name"],
                    row["sha256"],
                    row["size"],
                    row["workflow_id"],
                    json.dumps(row["predictions"], sort_keys=True),
                ]
            )
        return out.getvalue().encode()
    return b"".join(json.dumps(row, sort_keys=True).encode() + b"\n" for row in rows)


def tar_gz(name: str, data: bytes) -> bytes:
    """A reproducible one-member ``.tar.gz`` (fixed mtimes, so equal inputs give equal bytes)."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# engine -------------------------------------------------------------------------------------


class JobEngine:
    def __init__(self, core: EmulatorCore) -> None:
        self._core = core
        self.jobs: dict[str, Job] = {}
        self.order: list[Job] = []

    def snapshot(self) -> dict[str, Any]:
        return {job.job_id: job.snapshot() for job in self.order}

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def start(self, job_id: str, body: Any, name: str | None) -> tuple[Job, bool]:
        """Create and start a job; returns (job, created). Identical repeats are idempotent."""
        existing = self.jobs.get(job_id)
        if existing is not None:
            if _canonical(existing.definition) == _canonical(body):
                return existing, False
            raise JobRequestError(f"job {job_id!r} already exists with a different definition", 409)
        validate_job(self._core, job_id, body)
        job = Job(job_id=job_id, name=name or job_id, definition=body)
        self.jobs[job_id] = job
        self.order.append(job)
        job.log("info", "job-created", {"message": "job accepted", "jobId": job_id})
        self._launch(job)
        return job, True

    def abort(self, job: Job) -> None:
        if job.is_terminal:
            return
        if job.runner is not None:
            job.runner.cancel()
            job.runner = None
        for stage in job.stages:
            for task in stage.tasks:
                if not task.terminal:
                    task.status_type = "aborted"
                    task.notification = {"type": "task-aborted", "message": "job aborted"}
                    task.event_ts = utcnow()
            if stage.status_type == "info":
                stage.status_type = "aborted"
                stage.notification = {"type": "stage-aborted", "message": "job aborted"}
                stage.last_event_ts = utcnow()
        self._finish(job, "aborted", {"type": "job-aborted", "message": "Job aborted by user."})

    def fail_now(self, job: Job, message: str) -> None:
        """Test hook: end a running job as failed, as a failing workflow would."""
        if job.is_terminal:
            return
        if job.runner is not None:
            job.runner.cancel()
            job.runner = None
        for stage in job.stages:
            if stage.status_type == "info":
                stage.status_type = "error"
                stage.notification = {"type": "stage-failed", "message": message}
                stage.last_event_ts = utcnow()
            for task in stage.tasks:
                if not task.terminal:
                    task.status_type = "error"
                    task.notification = {"type": "task-failed", "message": message}
        self._finish(job, "failed", {"type": "job-failed", "message": message})

    def restart(self, job: Job, override: dict[str, Any] | None) -> None:
        if job.state not in ("failed", "aborted"):
            raise JobRequestError(
                f"job {job.job_id!r} is {job.state}; only failed or aborted jobs restart"
            )
        if override is not None:
            job.overrides.append(validate_override(override))
        job.state = "running"
        job.stages = []
        job.current_stage = None
        job.last_notification = {"type": "job-restarted", "message": "Job restarted."}
        job.last_update = utcnow()
        job.log("info", "job-restarted", {"overrides": override or {}})
        self._launch(job)

    def resume(self, job: Job) -> None:
        """Run again, from the first stage, a job that was running when the emulator stopped."""
        job.stages = []
        job.current_stage = None
        job.log("warning", "job-resumed", {"message": "the emulator restarted; job runs again"})
        self._launch(job)

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
            results = await self._write_results(job, processing_id, chunks)
            await self._run_stage(job, "export", [[] for _ in results] or [[]], [export_id])
            await self._write_export(job, export_id, results)
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
        tasks = [Task(f"{stage_id}-task-{i:04d}", chunk) for i, chunk in enumerate(chunks)]
        stage = Stage(stage_id, tasks, outputs)
        job.stages.append(stage)
        job.current_stage = stage_id
        job.last_update = utcnow()
        job.last_notification = {"type": "stage-started", "message": f"Stage {stage_id} started."}
        job.log("info", "stage-started", {"tasks": len(tasks)}, stage=stage_id)
        for output in outputs:
            self._ensure_output_batch(job, output)
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
                    task.status_type = "success"
                    task.notification = {"type": "task-completed", "message": "Task finished."}
                    job.log(
                        "info",
                        "task-completed",
                        {"items": len(task.inputs)},
                        stage=stage_id,
                        task=task.task_id,
                    )
            stage.last_event_ts = utcnow()
            job.last_update = stage.last_event_ts
        stage.status_type = "success"
        stage.notification = {"type": "stage-completed", "message": f"Stage {stage_id} finished."}
        stage.last_event_ts = utcnow()
        job.log("info", "stage-completed", {}, stage=stage_id)
        return True

    def _fail(self, job: Job, stage: Stage, task: Task) -> None:
        workflow = job.definition["processingSpecification"]["workflowId"]
        message = (
            f"Workflow {workflow!r} failed on task {task.task_id}: the emulator fails every "
            "workflow whose id starts with 'fail'."
        )
        task.status_type = "error"
        task.notification = {"type": "task-failed", "message": message}
        stage.status_type = "error"
        stage.notification = {"type": "stage-failed", "message": message}
        stage.last_event_ts = utcnow()
        job.log(
            "error", "task-failed", {"message": message}, stage=stage.stage_id, task=task.task_id
        )
        job.runner = None
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

    def _ensure_output_batch(self, job: Job, batch_id: str) -> Batch:
        store = self._core.store
        batch = store.get(batch_id)
        if batch is None:
            batch = store.create(
                batch_id,
                display_name=f"{job.name} {batch_id.rsplit('-', 1)[-1]}",
                batch_type="multipart-batch",
                content_type="mixed",
                upload_mode="system",
            )
        fmt = job.definition["processingSpecification"].get("aggregationFormat") or "jsonl"
        if batch_id.endswith("-export"):
            batch.parts.setdefault(
                RESULTS_PART,
                Part(RESULTS_PART, "results-archive", "archives", "Archived results", "metadata"),
            )
        else:
            description = f"Workflow results ({fmt})"
            batch.parts.setdefault(
                RESULTS_PART, Part(RESULTS_PART, "workflow-results", "metadata", description)
            )
        return batch

    async def _write_results(
        self, job: Job, batch_id: str, chunks: list[list[Item]]
    ) -> list[tuple[str, Path]]:
        spec = job.definition["processingSpecification"]
        fmt = spec.get("aggregationFormat") or "jsonl"
        workflow = spec["workflowId"]
        batch = self._ensure_output_batch(job, batch_id)
        out_dir = self._core.output_dir / job.job_id
        written: list[tuple[str, Path]] = []
        for index, chunk in enumerate(chunks):
            name = f"results-{index:04d}.{fmt}"
            rows = [(item.name, item.sha256, item.size) for item in chunk]
            data = render_results(workflow, rows, fmt)
            path = await self._save(out_dir / "processing" / name, data)
            batch.put_item(
                name=name,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                blob=path,
                part_name=RESULTS_PART,
            )
            written.append((name, path))
        return written

    async def _write_export(self, job: Job, batch_id: str, results: list[tuple[str, Path]]) -> None:
        batch = self._ensure_output_batch(job, batch_id)
        out_dir = self._core.output_dir / job.job_id / "export"
        for name, path in results:
            data = await anyio.Path(path).read_bytes()
            archive = await anyio.to_thread.run_sync(tar_gz, name, data)
            archive_name = f"{name}.tar.gz"
            target = await self._save(out_dir / archive_name, archive)
            batch.put_item(
                name=archive_name,
                size=len(archive),
                sha256=hashlib.sha256(archive).hexdigest(),
                blob=target,
                part_name=RESULTS_PART,
                nested_content_type="metadata",
            )

    async def _save(self, path: Path, data: bytes) -> Path:
        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

        await anyio.to_thread.run_sync(write, limiter=self._core.io_limiter)
        return path


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
