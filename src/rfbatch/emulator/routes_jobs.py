"""Batch-processing routes (``/batch-processing/v1/external/{workspace}/jobs...``), section 5.

Errors here answer ``{"message": ...}`` as the live service was seen to do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rfbatch.emulator.core import CORE_KEY, EmulatorCore
from rfbatch.emulator.jobs import Job, JobRequestError
from rfbatch.emulator.responses import Problem, ok

PREFIX = "/batch-processing/v1/external/{workspace}/jobs"
JOB = PREFIX + "/{job_id}"
SEVERITIES = frozenset({"info", "warning", "error"})


def _core(request: web.Request) -> EmulatorCore:
    return request.app[CORE_KEY]


def _job(request: web.Request) -> Job:
    job = _core(request).jobs.get(request.match_info["job_id"])
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
    core = _core(request)
    page = core.tokens.page(
        "jobs",
        core.jobs.order,
        token=request.query.get("nextPageToken"),
        page_size=request.query.get("pageSize"),
        newest_first=True,
    )
    return ok({"jobs": [j.wire() for j in page.items], "nextPageToken": page.next_token})


async def start_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        job, created = _core(request).jobs.start(
            request.match_info["job_id"], body, request.query.get("name")
        )
    except JobRequestError as exc:
        raise Problem(exc.status, str(exc)) from None
    return ok({"jobId": job.job_id, "created": created})


async def job_status(request: web.Request) -> web.Response:
    return ok({"job": _job(request).wire()})


async def job_stages(request: web.Request) -> web.Response:
    return ok({"stages": [s.wire() for s in _job(request).stages]})


async def job_tasks(request: web.Request) -> web.Response:
    core = _core(request)
    job = _job(request)
    stage_id = request.match_info["stage_id"]
    stage = job.stage(stage_id)
    if stage is None:
        raise Problem(404, f"stage {stage_id!r} of job {job.job_id!r} not found")
    page = core.tokens.page(
        f"tasks:{job.job_id}:{stage_id}:{id(stage)}",
        stage.tasks,
        token=request.query.get("nextPageToken"),
        page_size=request.query.get("pageSize"),
    )
    return ok({"tasks": [t.wire() for t in page.items], "nextPageToken": page.next_token})


async def abort_job(request: web.Request) -> web.Response:
    job = _job(request)
    _core(request).jobs.abort(job)
    return ok({"jobId": job.job_id, "isTerminal": job.is_terminal})


async def restart_job(request: web.Request) -> web.Response:
    job = _job(request)
    body = await _json_body(request, optional=True)
    try:
        _core(request).jobs.restart(job, body)
    except JobRequestError as exc:
        raise Problem(exc.status, str(exc)) from None
    return ok({"jobId": job.job_id})


async def job_logs(request: web.Request) -> web.Response:
    core = _core(request)
    job = _job(request)
    severity = request.query.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise Problem(400, f"severity must be one of {sorted(SEVERITIES)}")
    page = core.tokens.page(
        f"logs:{job.job_id}:{severity or ''}",
        job.logs,
        token=request.query.get("nextPageToken"),
        page_size=request.query.get("pageSize"),
        keep=(lambda e: e.severity == severity) if severity else None,
    )
    return ok({"logs": [e.wire() for e in page.items], "nextPageToken": page.next_token})


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
