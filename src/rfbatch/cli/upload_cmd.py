"""``rfbatch upload``: one pass of the ingest pipeline over local folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_ledger, open_services
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, fail, run, settings_from
from rfbatch.cli.options import (
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevelOpt,
    SettleOpt,
    ShardWorkersOpt,
    SourcesArg,
    StateDirOpt,
    VideosBatchOpt,
    VideoWorkersOpt,
    check_sources,
    videos_batch_for,
)
from rfbatch.cli.render import print_report, upload_report
from rfbatch.errors import ConfigError
from rfbatch.escapes import printable
from rfbatch.ids import validate_batch_id
from rfbatch.obs.progress import upload_progress
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.dry_run import dry_run
from rfbatch.pipeline.upload_pass import (
    UploadTarget,
    scan_specs,
    source_specs,
    upload_and_confirm,
    upload_options,
)
from rfbatch.settings import Settings


def upload(
    sources: SourcesArg,
    batch: Annotated[str, typer.Option(help="Images batch id.")],
    videos_batch: VideosBatchOpt = None,
    display_name: Annotated[str | None, typer.Option(help="Batch display name.")] = None,
    dry_run_: Annotated[
        bool, typer.Option("--dry-run", help="List what would be sent; send nothing.")
    ] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    settle_seconds: SettleOpt = None,
    shard_workers: ShardWorkersOpt = None,
    video_workers: VideoWorkersOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Upload images (as streamed tar shards) and videos from folders, then confirm their ingest."""
    settings = settings_from(
        config,
        {
            "state": {"dir": state_dir},
            "scan": {"settle_seconds": settle_seconds},
            "upload": {"shard_workers": shard_workers, "video_workers": video_workers},
        },
        log_level=log_level,
        log_format=log_format,
    )
    try:
        validate_batch_id(batch)
        videos = validate_batch_id(videos_batch or videos_batch_for(batch))
        check_sources(sources)
        key = None if dry_run_ else settings.api_key()  # a dry run talks to no API
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    target = UploadTarget(
        image_batch=batch,
        video_batch=videos,
        options=upload_options(settings, display_name),
    )

    async def main() -> int:
        if dry_run_:
            return await _dry_run(settings, sources, json_out)
        async with open_services(settings, source_roots=sources) as services:
            specs = source_specs(services, [str(s) for s in sources])
            tally = Tally()
            async with upload_progress(tally, enabled=not json_out):
                result = await upload_and_confirm(services, specs, target, tally=tally)
        upload_report(result, json_out)
        return EXIT_OK if result.complete else EXIT_ITEMS_FAILED

    run(main, key)


async def _dry_run(settings: Settings, sources: list[Path], json_out: bool) -> int:
    ledger = await open_ledger(settings, source_roots=sources)
    try:
        listing = await dry_run(ledger, scan_specs(settings, [str(s) for s in sources]))
    finally:
        await ledger.close()
    if json_out:
        print_report(listing)
    else:
        for item in listing["files"]:
            print(f"{item['size']:>12}  {item['kind']:<5}  {printable(item['path'])}")
        print(f"{listing['count']} files, {listing['bytes']} bytes would be sent")
    return EXIT_OK
