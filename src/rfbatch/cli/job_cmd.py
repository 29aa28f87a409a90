"""``rfbatch job ...``: start, inspect, wait for, abort and restart batch-processing jobs.

Every command takes ``--json`` and then prints one JSON document with the wire field names.
Exit codes: 0 done, 1 the job failed (or ``wait`` timed out), 2 usage, 3 API error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import JobMetadata, RestartOverrides
from rfbatch.app import open_client, open_ledger
from rfbatch.cli.common import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    collect,
    fail,
    reply,
    run,
    settings_and_key,
)
from rfbatch.cli.options import (
    WEBHOOK_LISTEN_FLAG,
    AggregationOpt,
    ConfigOpt,
    FailureRateOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevelOpt,
    MachineOpt,
    ParallelOpt,
    ParamOpt,
    RuntimeOpt,
    VideoFpsOpt,
    WorkersOpt,
    WorkflowParametersOpt,
    WorkflowParamsFileOpt,
    workflow_parameters,
)
from rfbatch.cli.render import (
    SCHEMA_VERSION,
    cell,
    job_outcome,
    job_progress,
    job_state,
    job_wire,
    print_json,
    print_report,
    table,
    wire,
)
from rfbatch.cli.webhook import webhook_receiver
from rfbatch.errors import ConfigError
from rfbatch.ids import job_id_for_batch, validate_batch_id, validate_job_id
from rfbatch.pipeline.jobs import JobOutcome, Wake, follow_job, job_spec_from, start_job
from rfbatch.settings import Settings, split_host_port
from rfbatch.webhooks import serve_webhooks

app = typer.Typer(help="Start, follow and manage batch-processing jobs.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="Job id.")]
LimitOpt = Annotated[int | None, typer.Option(help="Stop after this many rows.", min=1)]


# --- plumbing --------------------------------------------------------------------------------


def _valid_job(job_id: str) -> Callable[[], None]:
    def check() -> None:
        validate_job_id(job_id)

    return check


# --- start -----------------------------------------------------------------------------------


@app.command()
def start(
    batch: Annotated[
        str, typer.Option("--batch", "--batch-id", "-b", help="Input staging batch id.")
    ],
    videos: Annotated[
        bool, typer.Option("--videos", help="A video job (default: an image job).")
    ] = False,
    job_id: Annotated[
        str | None,
        typer.Option("--job-id", "-j", help="Job id (default: derived from the batch id)."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "--workflow-id", "-w", help="Workflow id.")
    ] = None,
    workflow_params: WorkflowParamsFileOpt = None,
    workflow_parameters_json: WorkflowParametersOpt = None,
    param: ParamOpt = None,
    image_input: Annotated[
        str | None,
        typer.Option(
            "--image-input", "--image-input-name", help="The workflow's image input name."
        ),
    ] = None,
    machine_type: MachineOpt = None,
    workers_per_machine: WorkersOpt = None,
    max_runtime_seconds: RuntimeOpt = None,
    max_parallel_tasks: ParallelOpt = None,
    max_image_failure_rate: FailureRateOpt = None,
    aggregation_format: AggregationOpt = None,
    persist_images_outputs: Annotated[
        bool | None,
        typer.Option(
            "--persist-images-outputs/--no-persist-images-outputs",
            help="Keep the workflow's image outputs.",
        ),
    ] = None,
    persist_output: Annotated[
        list[str] | None,
        typer.Option("--persist-output", help="An image output to persist; repeat."),
    ] = None,
    max_video_fps: VideoFpsOpt = None,
    notifications_url: Annotated[
        str | None, typer.Option("--notifications-url", help="Job webhook URL.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "--job-name", help="Job display name.")
    ] = None,
    part: Annotated[
        str | None,
        typer.Option(
            "--part", "--part-name", "-p", help="Use one part of a multipart input batch."
        ),
    ] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Start a job on a staging batch; starting the same job again is harmless."""
    settings, key = settings_and_key(config, log_level, log_format)
    try:
        # Options of the other kind of job, named by their flags.
        if max_video_fps is not None and not videos:
            raise ConfigError("--max-video-fps applies to video jobs only (add --videos)")
        if max_image_failure_rate is not None and videos:
            raise ConfigError("--max-image-failure-rate applies to image jobs only, not --videos")
        validate_batch_id(batch)
        the_job = validate_job_id(job_id) if job_id else job_id_for_batch(batch)
        given = workflow_parameters(workflow_params, workflow_parameters_json, param)
        params = {**settings.job.workflow_parameters, **(given or {})}
        spec = job_spec_from(
            settings.job,
            batch_id=batch,
            kind="videos" if videos else "images",
            workflow_id=workflow,
            workflow_parameters=params,
            image_input_name=image_input,
            machine_type=machine_type,
            workers_per_machine=workers_per_machine,
            max_runtime_seconds=max_runtime_seconds,
            max_parallel_tasks=max_parallel_tasks,
            max_image_failure_rate=max_image_failure_rate,
            aggregation_format=aggregation_format,
            persist_images_outputs=persist_images_outputs,
            images_outputs_to_be_persisted=persist_output or None,
            max_video_fps=max_video_fps,
            notifications_url=notifications_url,
            part_name=part,
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)

    async def main() -> int:
        async with open_client(settings) as client:
            await start_job(client, the_job, spec, name=name)
            job = await client.get_job(the_job)
        if json_out:
            print_json(job_wire(job))
        else:
            print(f"job {job.job_id} ({job.name}) started on batch {batch}: {job_state(job)}")
        return EXIT_OK

    run(main, key)


# --- inspect ---------------------------------------------------------------------------------


@app.command()
def status(job: JobArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Show a job's status."""

    def show(meta: JobMetadata) -> None:
        print(f"job: {meta.job_id} ({meta.name})")
        print(f"state: {job_state(meta)}")
        print(f"stage: {meta.current_stage or '-'} of {', '.join(meta.planned_stages or [])}")
        print(f"last notification: {cell(meta.last_notification)}")
        print(f"created: {meta.created_at.isoformat()}  updated: {meta.last_update.isoformat()}")

    reply(
        config,
        lambda c: c.get_job(job),
        show,
        json_out=json_out,
        as_json=job_wire,
        check=_valid_job(job),
    )


@app.command()
def stages(job: JobArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List a job's stages."""

    async def fetch(client: RoboflowClient) -> list[dict[str, Any]]:
        return [wire(s) for s in await client.list_stages(job)]

    columns = ["processingStageId", "statusType", "tasksNumber", "outputBatches"]
    reply(
        config,
        fetch,
        lambda rows: table(rows, [*columns, "lastEventTimestamp"]),
        json_out=json_out,
        check=_valid_job(job),
    )


@app.command()
def tasks(
    job: JobArg,
    stage: Annotated[str, typer.Argument(help="Stage id (see `rfbatch job stages`).")],
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    limit: LimitOpt = None,
) -> None:
    """List the tasks of one stage of a job."""
    columns = ["taskId", "statusType", "progress", "eventTimestamp", "notification"]
    reply(
        config,
        lambda c: collect(c.list_tasks(job, stage), limit, wire),
        lambda rows: table(rows, columns),
        json_out=json_out,
        check=_valid_job(job),
    )


@app.command()
def logs(
    job: JobArg,
    severity: Annotated[
        str | None, typer.Option("--severity", help="info, warning or error.")
    ] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Print a job's log entries."""

    def check() -> None:
        validate_job_id(job)
        if severity is not None and severity not in ("info", "warning", "error"):
            raise ConfigError(f"--severity must be info, warning or error, got {severity!r}")

    def show(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            where = "/".join(p for p in (row.get("processingStageId"), row.get("taskId")) if p)
            payload = json.dumps(row.get("payload", {}), separators=(",", ":"))
            print(f"{row['createdAt']} {row['severity']:<7} {row['logType']} {where} {payload}")

    reply(
        config,
        lambda c: collect(c.job_logs(job, severity=severity), limit, wire),
        show,
        json_out=json_out,
        check=check,
    )


@app.command("list")
def list_jobs(json_out: JsonOpt = False, config: ConfigOpt = None, limit: LimitOpt = None) -> None:
    """List the workspace's jobs, newest first."""

    def show(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            row["state"] = job_state(JobMetadata.model_validate(row))
        table(rows, ["jobId", "name", "state", "currentStage", "createdAt", "lastUpdate"])

    reply(config, lambda c: collect(c.list_jobs(), limit, job_wire), show, json_out=json_out)


# --- abort / restart -------------------------------------------------------------------------


@app.command()
def abort(job: JobArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Abort a running job; a job that has already ended is left as it is, and says so."""

    async def abort_unless_ended(client: RoboflowClient) -> dict[str, Any]:
        found = await client.get_job(job)
        if not found.is_running:
            return {
                "schema_version": SCHEMA_VERSION,
                "job_id": job,
                "aborted": False,
                "state": job_state(found),
            }
        await client.abort_job(job)
        return {
            "schema_version": SCHEMA_VERSION,
            "job_id": job,
            "aborted": True,
            "state": "aborted",
        }

    def show(result: dict[str, Any]) -> None:
        if result["aborted"]:
            print(f"job {job} aborted")
        else:
            print(f"job {job} had already ended ({result['state']}): nothing to abort")

    reply(config, abort_unless_ended, show, json_out=json_out, check=_valid_job(job))


@app.command()
def restart(
    job: JobArg,
    machine_type: MachineOpt = None,
    workers_per_machine: WorkersOpt = None,
    max_parallel_tasks: ParallelOpt = None,
    max_runtime_seconds: RuntimeOpt = None,
    max_image_failure_rate: FailureRateOpt = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Restart a failed or aborted job, optionally with new limits."""
    overrides: RestartOverrides | None = None

    def check() -> None:
        nonlocal overrides
        validate_job_id(job)
        try:
            overrides = RestartOverrides(
                machine_type=machine_type,
                workers_per_machine=workers_per_machine,
                max_parallel_tasks=max_parallel_tasks,
                max_runtime_seconds=max_runtime_seconds,
                max_image_failure_rate=max_image_failure_rate,
            )
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"invalid restart option {where}: {first['msg']}") from None

    reply(
        config,
        lambda c: c.restart_job(job, overrides),
        lambda _: print(f"job {job} restarted"),
        json_out=json_out,
        check=check,
    )


# --- wait ------------------------------------------------------------------------------------


@app.command()
def wait(
    job: JobArg,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Give up after this many seconds (exit 1).", min=0.001),
    ] = None,
    poll_seconds: Annotated[
        float | None, typer.Option("--poll-seconds", help="Seconds between status polls.", min=0.01)
    ] = None,
    webhook_listen: Annotated[
        str | None,
        typer.Option(
            "--webhook-listen",
            help="HOST:PORT to receive the job's webhook on while waiting "
            "(start the job with --notifications-url http://HOST:PORT/webhook).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Wait for a job to end: exit 0 when it succeeded, 1 when it failed, 3 on an API error."""
    settings, key = settings_and_key(config, log_level, log_format)
    listen: tuple[str, int] | None = None
    try:
        validate_job_id(job)
        if webhook_listen is not None:
            try:
                listen = split_host_port(webhook_listen)
            except ValueError as exc:
                raise ConfigError(f"--webhook-listen: {exc}") from None
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    deadline = timeout if timeout is not None else settings.job.wait_timeout_seconds

    async def follow(client: RoboflowClient, wake: Wake | None, interval: float) -> JobOutcome:
        async with job_progress(job, enabled=not json_out) as on_update:
            return await follow_job(
                client,
                job,
                poll_seconds=interval,
                wake=wake,
                on_update=on_update,
                deadline_seconds=deadline,
            )

    async def main() -> int:
        async with open_client(settings) as client:
            if listen is None:
                interval = poll_seconds or settings.job.poll_seconds
                outcome = await follow(client, None, interval)
            else:
                outcome = await _follow_with_webhook(
                    client, settings, listen, job, poll_seconds, follow
                )
        return _report_wait(outcome, json_out)

    run(main, key)


async def _follow_with_webhook(
    client: RoboflowClient,
    settings: Settings,
    listen: tuple[str, int],
    job_id: str,
    poll_seconds: float | None,
    follow: Callable[[RoboflowClient, Wake | None, float], Awaitable[JobOutcome]],
) -> JobOutcome:
    """Follow the job with a webhook receiver listening on ``listen`` for its notification."""
    # Not exclusive: a daemon may hold the state directory; event ids then dedup across both.
    manifest = await open_ledger(settings, exclusive=False)
    try:
        receiver = await webhook_receiver(settings.webhook, client, manifest.record_event)
        async with serve_webhooks(receiver, *listen, setting=WEBHOOK_LISTEN_FLAG):
            interval = poll_seconds or settings.job.poll_seconds_with_webhook
            return await follow(client, receiver.job_waker(job_id), interval)
    finally:
        await manifest.close()


def _report_wait(outcome: JobOutcome, json_out: bool) -> int:
    if json_out:
        print_report(job_outcome(outcome))
    if outcome.succeeded:
        if not json_out:
            batches = ", ".join(outcome.output_batches) or "none"
            print(f"job {outcome.job_id} succeeded in {outcome.seconds:.1f} s; outputs: {batches}")
        return EXIT_OK
    what = "timed out" if outcome.timed_out else "failed"
    print(f"rfbatch: error: job {outcome.job_id} {what}: {outcome.message}", file=sys.stderr)
    return EXIT_ITEMS_FAILED
