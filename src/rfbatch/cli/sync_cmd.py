"""``rfbatch sync``: upload folders, wait for ingest, run the workflow, wait, export the results."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_services
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, fail, run, settings_from
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
    SettleOpt,
    SourcesArg,
    StateDirOpt,
    VideoFpsOpt,
    VideosBatchOpt,
    WebhookListenOpt,
    WorkersOpt,
    WorkflowParametersOpt,
    WorkflowParamsFileOpt,
    check_sources,
    videos_batch_for,
    workflow_parameters,
)
from rfbatch.cli.render import export_progress, job_progress, sync_report
from rfbatch.cli.webhook import webhook_receiver
from rfbatch.errors import ConfigError
from rfbatch.ids import validate_batch_id, validate_job_id, videos_job_for
from rfbatch.localfs.diskspace import check_output_folder
from rfbatch.obs.progress import upload_progress
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.sync import SyncResult, default_batch_id, sync
from rfbatch.pipeline.upload_pass import UploadTarget, source_specs, upload_options
from rfbatch.settings import refuse_inside_sources, split_host_port
from rfbatch.webhooks import WebhookReceiver, serve_webhooks


def sync_command(
    sources: SourcesArg,
    batch: Annotated[
        str | None, typer.Option(help="Images batch id (default: derived from the folders).")
    ] = None,
    videos_batch: VideosBatchOpt = None,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            "--workflow-id",
            help="Workflow id; without it, sync uploads and confirms only.",
        ),
    ] = None,
    job_id: Annotated[
        str | None,
        typer.Option(
            "--job-id",
            help="The images batch's job id (the videos batch's is derived from it). Default: "
            "derived from the batch id, and anew when the job definition changes.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where the results go.")
    ] = None,
    workflow_params: WorkflowParamsFileOpt = None,
    workflow_parameters_json: WorkflowParametersOpt = None,
    param: ParamOpt = None,
    image_input_name: Annotated[
        str | None,
        typer.Option("--image-input", "--image-input-name", help="The workflow's image input."),
    ] = None,
    machine_type: MachineOpt = None,
    workers_per_machine: WorkersOpt = None,
    max_runtime_seconds: RuntimeOpt = None,
    max_parallel_tasks: ParallelOpt = None,
    max_image_failure_rate: FailureRateOpt = None,
    aggregation_format: AggregationOpt = None,
    max_video_fps: VideoFpsOpt = None,
    webhook_listen: WebhookListenOpt = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="The URL the service should call to reach --webhook-listen.")
    ] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    settle_seconds: SettleOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Upload, wait for ingest, run the workflow, wait for the job and download its results."""
    try:
        params = workflow_parameters(workflow_params, workflow_parameters_json, param)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    settings = settings_from(
        config,
        {
            "state": {"dir": state_dir},
            "scan": {"settle_seconds": settle_seconds},
            "job": {
                "workflow_id": workflow,
                "workflow_parameters": params,
                "image_input_name": image_input_name,
                "machine_type": machine_type,
                "workers_per_machine": workers_per_machine,
                "max_runtime_seconds": max_runtime_seconds,
                "max_parallel_tasks": max_parallel_tasks,
                "max_image_failure_rate": max_image_failure_rate,
                "aggregation_format": aggregation_format,
                "max_video_fps": max_video_fps,
                "notifications_url": webhook_url,
            },
            "webhook": {"listen": webhook_listen, "public_url": webhook_url},
        },
        log_level=log_level,
        log_format=log_format,
    )
    try:
        key = settings.api_key()
        check_sources(sources)
        images = validate_batch_id(batch or default_batch_id(sources))
        videos = validate_batch_id(videos_batch or videos_batch_for(images))
        job_ids = (
            {images: validate_job_id(job_id), videos: videos_job_for(job_id)} if job_id else {}
        )
        if settings.job.workflow_id and output is None:
            raise ConfigError("--output is required with --workflow (where should results go?)")
        if output is not None:
            refuse_inside_sources("--output", output, sources)  # before anything is written
            check_output_folder(output)  # found now, not after the upload and a paid job
        listen = split_host_port(settings.webhook.listen) if settings.webhook.listen else None
    except (ConfigError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    # With a receiver, the service is asked for ingest notifications at the URL it gives for
    # jobs (as the daemon does): they carry the reasons for rejected files.
    ingest_url = settings.job.notifications_url if listen is not None else None
    target = UploadTarget(images, videos, upload_options(settings, ingest_webhook_url=ingest_url))

    async def main() -> int:
        async with (
            open_services(settings, source_roots=sources) as services,
            AsyncExitStack() as stack,
        ):
            receiver: WebhookReceiver | None = None
            if listen is not None:
                receiver = await webhook_receiver(
                    settings.webhook, services.client, services.manifest.record_event
                )
                # A busy address is named by what chose it: the flag or the config key.
                chosen = WEBHOOK_LISTEN_FLAG if webhook_listen else "[webhook] listen"
                await stack.enter_async_context(serve_webhooks(receiver, *listen, setting=chosen))

            tally = Tally()
            specs = source_specs(services, [str(s) for s in sources])
            async with (
                upload_progress(tally, enabled=not json_out),
                job_progress(images, enabled=not json_out) as live,
                export_progress(enabled=not json_out, waiting=None) as exporting,
            ):
                result = await sync(
                    services,
                    specs,
                    target,
                    output_dir=output,
                    tally=tally,
                    receiver=receiver,
                    on_job_update=live,
                    job_ids=job_ids,
                    on_export_progress=exporting,
                )
        sync_report(result, json_out)
        print_stopped(result)
        if not json_out and any(not o.succeeded for o in result.jobs.values()):
            print(
                "rfbatch: a rerun follows the same job: change the job definition (it then runs "
                "as a new job) or pass --job-id NEW to run it again; nothing is uploaded again",
                file=sys.stderr,
            )
        return EXIT_OK if result.complete else EXIT_ITEMS_FAILED

    run(main, key)


def print_stopped(result: SyncResult) -> None:
    """Why the export stopped early (the disk), as an error line: the exit code alone says
    only that something is missing."""
    stopped = next((e.stopped for e in result.exports if e.stopped), None)
    if stopped is not None:
        print(f"rfbatch: error: {stopped}; run sync again once there is room", file=sys.stderr)
