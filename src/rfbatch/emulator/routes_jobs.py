"""Batch-processing routes (``/batch-processing/v1/external/{workspace}/jobs...``), section 5.

Errors here answer ``{"message": ...}`` as the live service was seen to do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rfbatch.emulator.core import core_of
from rfbatch.emulator.job_model import Job, LogEntry, Task
from rfbatch.emulator.responses import Problem, ok, paged

PREFIX = "/batch-processing/v1/external/{workspace}/jobs"
JOB = PREFIX + "/{job_id}"
SEVERITIES = frozenset({"info", "warning", "error"})


def _job(request: web.Request) -> Job:
    job = core_of(request).jobs.get(request.match_info["job_id"])
    if job is None:
        raise Problem(404, f"job {request.match_info['job_id']!r} not found")
    return job


async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise Problem(400, '"value" is required')
    try:
        return await request.json()
    except ValueError:
        raise Problem(400, "the body is not valid JSON") from None


async def list_jobs(request: web.Request) -> web.Response:
    core = core_of(request)
    return paged(request, core.tokens, "jobs", core.jobs.order, "jobs", Job.wire, newest_first=True)


async def start_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    job, created = core_of(request).jobs.start(
        request.match_info["job_id"], body, request.query.get("name")
    )
    return ok({"jobId": job.job_id, "created": created})


async def job_status(request: web.Request) -> web.Response:
    return ok({"job": _job(request).wire()})


async def job_stages(request: web.Request) -> web.Response:
    return ok({"stages": [s.wire() for s in _job(request).stages]})


async def job_tasks(request: web.Request) -> web.Response:
    core = core_of(request)
    job = _job(request)
    stage_id = request.match_info["stage_id"]
    stage = job.stage(stage_id)
    if stage is None:
        raise Problem(404, f"stage {stage_id!r} of job {job.job_id!r} not found")
    listing = f"tasks:{job.job_id}:{stage_id}:{id(stage)}"
    return paged(request, core.tokens, listing, stage.tasks, "tasks", Task.wire)


async def abort_job(request: web.Request) -> web.Response:
    job = _job(request)
    core_of(request).jobs.abort(job)
    return ok({"jobId": job.job_id, "isTerminal": job.is_terminal})


async def restart_job(request: web.Request) -> web.Response:
    job = _job(request)
    body = await _json_body(request, optional=True)
    core_of(request).jobs.restart(job, body)
    return ok({"jobId": job.job_id})


async def job_logs(request: web.Request) -> web.Response:
    core = core_of(request)
    job = _job(request)
    severity = request.query.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise Problem(400, f"severity must be one of {sorted(SEVERITIES)}")
    return paged(
        request,
        core.tokens,
        f"logs:{job.job_id}:{severity or ''}",
        job.logs,
        "logs",
        LogEntry.wire,
        keep=(lambda e: e.severity == severity) if severity else None,
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX, list_jobs, name="list_jobs")
    r.add_post(JOB, start_job, name="jobs_start")
    r.add_get(JOB, job_status, name="job_status")
    r.add_get(JOB + "/stages", job_stages, name="job_stages")
    r.add_get(JOB + "/stages/{stage_id}/tasks", job_tasks, name="job_tasks")
    r.add_post(JOB + "/abort", abort_job, name="job_abort")
    r.add_post(JOB + "/restart", restart_job, name="job_restart")
    r.add_get(JOB + "/logs", job_logs, name="job_logs")
