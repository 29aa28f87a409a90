"""The records of a batch job: the job, its stages, their tasks and its log.

A job is ``running`` until it ends ``succeeded``, ``failed`` or ``aborted``; stages and tasks
are open while their ``statusType`` is ``info`` and closed by :meth:`Stage.close` /
:meth:`Task.close`. :mod:`job_engine` moves them along; :mod:`persist` saves and reloads them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rfbatch.emulator.model import Item, iso, utcnow, with_optional

TRT_TYPE = "trt-compilation-v1"


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

    def close(self, status_type: str, notification: dict[str, Any]) -> None:
        self.status_type = status_type
        self.notification = notification
        self.event_ts = utcnow()


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

    def close(self, status_type: str, notification: dict[str, Any]) -> None:
        self.status_type = status_type
        self.notification = notification
        self.last_event_ts = utcnow()


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
        return with_optional(body, processingStageId=self.stage_id, taskId=self.task_id)


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
