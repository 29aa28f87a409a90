"""``rfbatch export``: download staged batches (job outputs, inputs) into a local folder."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.progress import (
    FileSizeColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

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
from rfbatch.pipeline.export import (
    ExportProgress,
    ExportResult,
    ProgressHook,
    export_batch,
    export_batches,
)

BatchesArg = Annotated[
    list[str],
    typer.Argument(help="Batch id(s); several go to <output>/<batch id> each.", show_default=False),
]


def export(
    batches: BatchesArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to download into.")],
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="Only this part of a multipart batch (repeatable)."),
    ] = None,
    no_unpack: Annotated[
        bool, typer.Option("--no-unpack", help="Keep .tar/.tar.gz files as they are.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Download again files already in place.")
    ] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where the manifest lives.")] = None,
    workers: Annotated[int | None, typer.Option(help="Concurrent downloads.")] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Download every file of a batch, resuming where an earlier run stopped."""
    settings = settings_from(
        config,
        {"state": {"dir": state_dir}, "export": {"workers": workers}},
        log_level=log_level,
        log_format=log_format,
    )
    try:
        ids = [validate_batch_id(b) for b in batches]
        if output.exists() and not output.is_dir():
            raise ConfigError(f"output {output} exists and is not a folder")
        key = settings.api_key()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    unpack = settings.export.unpack and not no_unpack
    parts = list(part) if part else None

    async def main() -> int:
        show_bar = sys.stderr.isatty() and not json_out
        async with open_services(settings) as services, export_progress(show_bar) as hook:
            if len(ids) == 1:
                results = [
                    await export_batch(
                        services,
                        ids[0],
                        output,
                        parts=parts,
                        unpack=unpack,
                        force=force,
                        on_progress=hook,
                    )
                ]
            else:
                results = await export_batches(
                    services,
                    ids,
                    output,
                    parts=parts,
                    unpack=unpack,
                    force=force,
                    on_progress=hook,
                )
        report(results, json_out)
        stopped = next((r.stopped for r in results if r.stopped), None)
        if stopped is not None:
            print(f"rfbatch: error: {stopped}", file=sys.stderr, flush=True)
        return EXIT_OK if all(r.complete for r in results) else EXIT_ITEMS_FAILED

    run(main, key)


@asynccontextmanager
async def export_progress(enabled: bool) -> AsyncIterator[ProgressHook | None]:
    """A rich bar (files, bytes, rate) on a terminal, fed through the export's progress hook.

    The hook only stores the latest counters; the bar reads them a few times a second, so a
    download's byte callbacks never wait on the terminal.
    """
    if not enabled:
        yield None
        return
    latest: list[ExportProgress] = []

    def hook(progress: ExportProgress) -> None:
        if not latest or latest[0] is not progress:
            latest[:] = [progress]

    # The listing announces no sizes, so bytes are shown as done so far, not as a fraction.
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        FileSizeColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("listing", total=None)

        def refresh() -> None:
            if not latest:
                return
            p = latest[0]
            listed = f"{p.files_listed}" if p.listing_done else f"{p.files_listed}+"
            failed = f", {p.files_failed} failed" if p.files_failed else ""
            bar.update(
                task,
                description=f"{p.batch_id}: {p.files_finished}/{listed} files{failed}",
                completed=p.bytes_received,
            )

        async with anyio.create_task_group() as tg:

            async def poll() -> None:
                while True:
                    refresh()
                    await anyio.sleep(0.25)

            tg.start_soon(poll)
            try:
                yield hook
            finally:
                tg.cancel_scope.cancel()
        refresh()


def summary(results: list[ExportResult]) -> dict[str, Any]:
    return {
        "files_downloaded": sum(r.downloaded for r in results),
        "files_skipped": sum(r.skipped for r in results),
        "files_failed": sum(len(r.failed) for r in results),
        "files_unpacked": sum(r.unpacked for r in results),
        "bytes": sum(r.bytes for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
        "complete": all(r.complete for r in results),
        "stopped": next((r.stopped for r in results if r.stopped), None),
        "batches": [r.summary() for r in results],
    }


def report(results: list[ExportResult], json_out: bool) -> None:
    if json_out:
        print_json(summary(results))
        return
    for r in results:
        mb = r.bytes / 1e6
        rate = mb / r.seconds if r.seconds > 0 else 0.0
        unpacked = f", {r.unpacked} unpacked from archives" if r.unpacked else ""
        print(
            f"batch {r.batch_id} -> {r.output_dir}: downloaded {r.downloaded} files "
            f"({mb:.1f} MB, {rate:.1f} MB/s) in {r.seconds:.1f} s; "
            f"{r.skipped} already present, {len(r.failed)} failed{unpacked}"
        )
        for f in r.failed:
            where = "/".join(x for x in (f.part_name, f.file_name) if x) or "?"
            print(f"failed {where!r}: {f.reason}")
