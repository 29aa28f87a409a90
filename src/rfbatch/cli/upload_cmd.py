"""``rfbatch upload``: one pass of the ingest pipeline over local folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_services
from rfbatch.cli.common import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevelOpt,
    fail,
    print_json,
    run,
    settings_from,
)
from rfbatch.errors import ConfigError
from rfbatch.ids import validate_batch_id
from rfbatch.obs.progress import upload_progress
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.dry_run import dry_run
from rfbatch.pipeline.upload_pass import (
    PassResult,
    UploadTarget,
    source_specs,
    upload_and_confirm,
    upload_options,
)

SourcesArg = Annotated[list[Path], typer.Argument(help="Folders to upload (recursive).")]


def videos_batch_for(batch: str) -> str:
    """The default videos batch: images and videos never share a batch."""
    return f"{batch[:57]}-videos"


def check_sources(sources: list[Path]) -> None:
    for src in sources:
        if not src.is_dir():
            raise ConfigError(f"source {src} is not a folder")


def upload(
    sources: SourcesArg,
    batch: Annotated[str, typer.Option(help="Images batch id.")],
    videos_batch: Annotated[
        str | None, typer.Option(help="Videos batch id (default: <batch>-videos).")
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Batch display name.")] = None,
    dry_run_: Annotated[
        bool, typer.Option("--dry-run", help="List what would be sent; send nothing.")
    ] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where the manifest lives.")] = None,
    settle_seconds: Annotated[
        float | None, typer.Option(help="Quiet time before a file is taken.")
    ] = None,
    shard_workers: Annotated[int | None, typer.Option(help="Concurrent shard uploads.")] = None,
    video_workers: Annotated[int | None, typer.Option(help="Concurrent video uploads.")] = None,
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
        key = settings.api_key()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    target = UploadTarget(
        image_batch=batch,
        video_batch=videos,
        options=upload_options(settings, display_name),
    )

    async def main() -> int:
        async with open_services(settings, source_roots=sources) as services:
            specs = source_specs(services, [str(s) for s in sources])
            if dry_run_:
                listing = await dry_run(services, specs)
                if json_out:
                    print_json(listing)
                else:
                    for item in listing["files"]:
                        print(f"{item['size']:>12}  {item['kind']:<5}  {item['path']}")
                    print(f"{listing['count']} files, {listing['bytes']} bytes would be sent")
                return EXIT_OK
            tally = Tally()
            show_bar = sys.stderr.isatty() and not json_out
            async with upload_progress(tally, enabled=show_bar):
                result = await upload_and_confirm(services, specs, target, tally=tally)
        report(result, json_out)
        return EXIT_OK if result.complete else EXIT_ITEMS_FAILED

    run(main, key)


def summary(result: PassResult) -> dict[str, object]:
    t = result.tally
    return {
        "files_found": t.found,
        "files_unchanged": t.unchanged,
        "files_sent": t.sent,
        "files_skipped": t.skipped_count,
        "files_failed": t.failed_count,
        "bytes_sent": t.sent_bytes,
        "shards": t.shards,
        "videos": t.videos,
        "seconds": round(t.seconds, 3),
        "confirmed": all(c.confirmed for c in result.confirmations),
        "batches": [
            {
                "batch_id": c.batch_id,
                "expected": c.expected,
                "count": c.count,
                "failed_by_service": c.failed_by_service,
                "confirmed": c.confirmed,
            }
            for c in result.confirmations
        ],
        "skipped": [{"path": f.path, "reason": f.reason} for f in t.skipped],
        "failed": [{"path": f.path, "reason": f.reason} for f in t.failed],
    }


def report(result: PassResult, json_out: bool) -> None:
    if json_out:
        print_json(summary(result))
        return
    t = result.tally
    mb = t.sent_bytes / 1e6
    secs = t.seconds
    rate = mb / secs if secs > 0 else 0.0
    print(
        f"sent {t.sent} files ({mb:.1f} MB, {rate:.1f} MB/s) in {secs:.1f} s; "
        f"{t.unchanged} unchanged, {t.skipped_count} skipped, {t.failed_count} failed"
    )
    for c in result.confirmations:
        state = "confirmed" if c.confirmed else "NOT confirmed"
        print(f"batch {c.batch_id}: {c.count} items ({c.expected} expected) {state}")
    for f in result.tally.skipped:
        print(f"skipped {f.path}: {f.reason}")
    for f in result.tally.failed:
        print(f"failed {f.path}: {f.reason}")
