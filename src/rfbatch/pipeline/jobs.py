"""Jobs: build a job definition from settings, start it, and follow it to its end.

A job is followed by polling its status (contract 5.2). A webhook (contract section 9) only
makes the next poll come sooner: whoever passes ``wake`` also passes a slower ``poll_seconds``,
so a lost notification costs latency, never correctness. State is always read from the service,
never inferred from a notification.

Stage progress follows contract section 6: a task whose ``statusType`` is not ``info`` is
terminal and counts as 1, a running task counts as its ``progress``, and a null ``progress``
means "not registered yet" (0). The average is over the stage's ``tasksNumber``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
import structlog
from pydantic import ValidationError

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import (
    ImageJobSpec,
    JobMetadata,
    JobStage,
    TaskStatus,
    VideoJobSpec,
)
from rfbatch.errors import ConfigError, ConflictError, TransientError
from rfbatch.ids import validate_batch_id, validate_job_id
from rfbatch.settings import JobSettings

log = structlog.get_logger("rfbatch.jobs")

JobKind = Literal["images", "videos"]
KINDS: tuple[JobKind, ...] = ("images", "videos")

# Options that exist for one kind of job only: the wire schema has no place for the other kind.
_IMAGE_ONLY = frozenset({"max_image_failure_rate", "images_metadata_part"})
_VIDEO_ONLY = frozenset({"max_video_fps"})
# Options that come from settings.job (same names) plus the ones that only make sense per call.
_FROM_SETTINGS = (
    "workflow_id",
    "workflow_parameters",
    "image_input_name",
    "machine_type",
    "workers_per_machine",
    "max_runtime_seconds",
    "max_parallel_tasks",
    "max_image_failure_rate",
    "aggregation_format",
    "persist_images_outputs",
    "images_outputs_to_be_persisted",
    "max_video_fps",
    "notifications_url",
)
_PER_CALL = ("part_name", "inference_backend", "images_metadata_part")
JOB_OPTIONS = frozenset(_FROM_SETTINGS + _PER_CALL)

# Consecutive polls that may fail (each after the client's own bounded retries) before giving up.
MAX_FAILED_POLLS = 3


# --- job definitions -------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping | list | tuple) and not value)


def job_spec_from(
    settings: JobSettings, *, batch_id: str, kind: JobKind, **overrides: Any
) -> ImageJobSpec | VideoJobSpec:
    """The job definition for ``batch_id``: ``settings`` as defaults, ``overrides`` on top.

    An override of ``None`` keeps the setting; any other value replaces it (dicts and lists are
    replaced, not merged). Empty collections are left out of the definition, so that equal
    intent gives an equal body and a retried start stays idempotent. A setting that belongs to
    the other kind of job (``max_video_fps`` for an image job) is ignored, but an explicit
    override of it is a :class:`ConfigError`, as is any invalid value; the error names the option.
    """
    if kind not in KINDS:
        raise ConfigError(f"job kind must be one of {', '.join(KINDS)}, got {kind!r}")
    validate_batch_id(batch_id)
    unknown = sorted(set(overrides) - JOB_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown job option {unknown[0]!r}")
    not_here = _VIDEO_ONLY if kind == "images" else _IMAGE_ONLY
    for name in sorted(not_here):
        if overrides.get(name) is not None:
            other = "video" if kind == "images" else "image"
            raise ConfigError(f"job option {name} applies to {other} jobs only")

    values: dict[str, Any] = {name: getattr(settings, name) for name in _FROM_SETTINGS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in not_here:
        values.pop(name, None)
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    values = {k: v for k, v in values.items() if not _empty(v)}
    if not values.get("workflow_id"):
        raise ConfigError("no workflow id: set [job] workflow_id or pass --workflow")

    model = ImageJobSpec if kind == "images" else VideoJobSpec
    try:
        return model(batch_id=batch_id, **values)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "job"
        raise ConfigError(f"invalid job option {where}: {first['msg']}") from None


def definition_digest(spec: ImageJobSpec | VideoJobSpec) -> str:
    """A digest of what a job computes: equal for equal definitions.

    The notification URL is left out: where the service reports to (a ``--webhook-listen``
    port, say) changes nothing about the results.
    """
    body = spec.model_dump(mode="json", exclude={"notifications_url"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


async def start_job(
    client: RoboflowClient,
    job_id: str,
    spec: ImageJobSpec | VideoJobSpec,
    name: str | None = None,
) -> None:
    """Start ``job_id``. Starting it again with the same definition is a no-op on the service;
    a different definition under the same id is a :class:`ConflictError` naming the job id."""
    validate_job_id(job_id)
    try:
        await client.start_job(job_id, spec, name=name)
    except ConflictError as exc:
        raise ConflictError(
            f"job {job_id!r} already exists with a different definition; "
            "choose another job id, or restart the existing job",
            status=exc.status,
        ) from None
    log.info(
        "job.started",
        job=job_id,
        batch=spec.batch_id,
        type=spec.job_type,
        workflow=spec.workflow_id,
    )


# --- snapshots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageView:
    """One stage and how far its tasks have got."""

    stage: JobStage
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    progress: float

    @property
    def stage_id(self) -> str:
        return self.stage.processing_stage_id

    @property
    def running(self) -> bool:
        return self.stage.is_running


def stage_view(stage: JobStage, tasks: Iterable[TaskStatus] | None) -> StageView:
    """Summarise ``stage``; ``tasks=None`` means they were not listed (a terminal stage)."""
    if tasks is None:
        total = max(1, stage.tasks_number)
        done = 0 if stage.is_running else total
        return StageView(stage, total, done, 0, done / total)
    listed = list(tasks)
    total = max(1, stage.tasks_number, len(listed))
    done = sum(1 for t in listed if not t.is_running)
    failed = sum(1 for t in listed if t.failed)
    worked = sum(1.0 if not t.is_running else min(1.0, max(0.0, t.progress or 0.0)) for t in listed)
    return StageView(stage, total, done, failed, worked / total)


@dataclass(frozen=True)
class JobView:
    """A snapshot of a job: its metadata and, when listed, its stages with task counts."""

    job: JobMetadata
    stages: tuple[StageView, ...] = ()

    @property
    def current(self) -> StageView | None:
        """The stage the service says is current, else the last one started."""
        for view in self.stages:
            if view.stage_id == self.job.current_stage:
                return view
        return self.stages[-1] if self.stages else None


async def job_view(client: RoboflowClient, job_id: str, *, with_stages: bool = True) -> JobView:
    """Read the job, and (``with_stages``) its stages and the tasks of the running ones."""
    job = await client.get_job(job_id)
    if not with_stages:
        return JobView(job)
    views = []
    for stage in await client.list_stages(job_id):
        tasks = None
        if stage.is_running:
            tasks = await client.list_tasks(job_id, stage.processing_stage_id).collect()
        views.append(stage_view(stage, tasks))
    return JobView(job, tuple(views))


def _message_of(notification: object) -> str | None:
    if isinstance(notification, dict):
        message = notification.get("message")
        return str(message) if message else None
    if isinstance(notification, str) and notification:
        return notification
    return None


def failure_message(view: JobView) -> str:
    """Why a job failed, in the service's words: its last notification, else a failed stage's."""
    message = _message_of(view.job.last_notification)
    if message:
        return message
    for stage in reversed(view.stages):
        if stage.stage.failed and (message := _message_of(stage.stage.notification)):
            return message
    return "the job failed without a message"


# --- output batches --------------------------------------------------------------------------


def _ordered_outputs(stages: Iterable[JobStage], extra: Iterable[str] = ()) -> list[str]:
    stages = list(stages)
    rank = {"export": 0, "processing": 1}
    ordered = sorted(
        enumerate(stages),
        key=lambda pair: (
            rank.get(pair[1].processing_stage_name, rank.get(pair[1].processing_stage_id, 2)),
            pair[0],
        ),
    )
    seen: dict[str, None] = {}
    for _, stage in ordered:
        for batch in stage.output_batches:
            seen.setdefault(batch, None)
    for batch in extra:
        seen.setdefault(batch, None)
    return list(seen)


async def output_batches(client: RoboflowClient, job_id: str) -> list[str]:
    """The job's output batch ids: the export stage's first, then processing's, no repeats."""
    validate_job_id(job_id)
    return _ordered_outputs(await client.list_stages(job_id))


# --- following -------------------------------------------------------------------------------


class Wake(Protocol):
    """Anything whose ``wait()`` returns when the job may have changed (a webhook arrived).

    A :class:`rfbatch.webhooks.Waker` wakes once per notification; a plain ``anyio.Event`` is
    taken as one-shot (after it fires, polling goes on at ``poll_seconds``).
    """

    async def wait(self) -> Any: ...


@dataclass(frozen=True)
class JobOutcome:
    """How a followed job ended (or that it had not ended by the deadline)."""

    job_id: str
    succeeded: bool
    message: str | None
    output_batches: tuple[str, ...]
    timed_out: bool
    job: JobMetadata | None
    seconds: float
    polls: int
    wakeups: int

    @property
    def state(self) -> str:
        if self.timed_out:
            return "running"
        return "succeeded" if self.succeeded else "failed"


def _is_spent(wake: Wake) -> bool:
    # An anyio.Event cannot be cleared: once set, waiting on it again would spin.
    is_set = getattr(wake, "is_set", None)
    return callable(is_set) and bool(is_set())


async def _pause(wake: Wake | None, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``wake`` fires; ``True`` when woken early."""
    if wake is None:
        await anyio.sleep(seconds)
        return False
    with anyio.move_on_after(seconds):
        await wake.wait()
        return True
    return False


async def follow_job(
    client: RoboflowClient,
    job_id: str,
    *,
    poll_seconds: float,
    wake: Wake | None = None,
    on_update: Callable[[JobView], None] | None = None,
    deadline_seconds: float,
) -> JobOutcome:
    """Poll ``job_id`` until it is terminal or ``deadline_seconds`` have passed.

    ``wake`` cuts a pause short (a webhook arrived), so pass a slow ``poll_seconds`` with it.
    ``on_update`` gets a :class:`JobView` after every poll; stages and tasks are listed only
    when it is given. A transient failure of one poll is logged and the next poll tried; more
    than :data:`MAX_FAILED_POLLS` in a row, or any other API error, propagates.
    """
    validate_job_id(job_id)
    if poll_seconds <= 0 or deadline_seconds <= 0:
        raise ConfigError("poll_seconds and deadline_seconds must be > 0")
    started = time.monotonic()
    polls = wakeups = failed_polls = 0
    view: JobView | None = None
    stage: str | None = None
    with anyio.move_on_after(deadline_seconds):
        while True:
            try:
                view = await job_view(client, job_id, with_stages=on_update is not None)
            except TransientError as exc:
                failed_polls += 1
                if failed_polls > MAX_FAILED_POLLS:
                    raise
                log.warning("job.poll_failed", job=job_id, error=str(exc), failures=failed_polls)
            else:
                polls += 1
                failed_polls = 0
                if polls == 1:
                    log.info(
                        "job.following",
                        job=job_id,
                        stage=view.job.current_stage,
                        terminal=view.job.terminal,
                        poll_seconds=poll_seconds,
                        webhook=wake is not None,
                    )
                if view.job.current_stage != stage:
                    stage = view.job.current_stage
                    log.info("job.stage", job=job_id, stage=stage)
                if on_update is not None:
                    on_update(view)
                if view.job.terminal:
                    break
            if await _pause(wake, poll_seconds):
                wakeups += 1
                if wake is not None and _is_spent(wake):
                    wake = None
    return await _outcome(client, job_id, view, started, polls, wakeups)


async def _outcome(
    client: RoboflowClient,
    job_id: str,
    view: JobView | None,
    started: float,
    polls: int,
    wakeups: int,
) -> JobOutcome:
    seconds = round(time.monotonic() - started, 3)
    common: dict[str, Any] = {
        "job_id": job_id,
        "seconds": seconds,
        "polls": polls,
        "wakeups": wakeups,
    }
    if view is None or not view.job.terminal:
        log.warning("job.wait_timeout", job=job_id, seconds=seconds, polls=polls)
        return JobOutcome(
            succeeded=False,
            message=f"job {job_id!r} had not finished after {seconds:.1f} s",
            output_batches=(),
            timed_out=True,
            job=view.job if view is not None else None,
            **common,
        )
    job = view.job
    if job.succeeded:
        notice = job.last_notification if isinstance(job.last_notification, dict) else {}
        extra = [b for b in notice.get("resultsBatches", []) if isinstance(b, str)]
        stages = [s.stage for s in view.stages] or await client.list_stages(job_id)
        outcome = JobOutcome(
            succeeded=True,
            message=None,
            output_batches=tuple(_ordered_outputs(stages, extra)),
            timed_out=False,
            job=job,
            **common,
        )
    else:
        full = view if view.stages else await job_view(client, job_id)
        outcome = JobOutcome(
            succeeded=False,
            message=failure_message(full),
            output_batches=(),
            timed_out=False,
            job=job,
            **common,
        )
    (log.info if outcome.succeeded else log.error)(
        "job.done",
        job=job_id,
        state=outcome.state,
        message=outcome.message,
        outputs=list(outcome.output_batches),
        seconds=seconds,
        polls=polls,
        wakeups=wakeups,
    )
    return outcome
