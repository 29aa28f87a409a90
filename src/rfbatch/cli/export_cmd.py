"""``rfbatch export``: download staged batches (job outputs, inputs) into a local folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_services
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, fail, run, settings_from
from rfbatch.cli.options import ConfigOpt, JsonOpt, LogFormatOpt, LogLevelOpt, StateDirOpt
from rfbatch.cli.render import export_progress, export_report
from rfbatch.errors import ConfigError
from rfbatch.ids import validate_batch_id
from rfbatch.localfs.diskspace import check_output_folder
from rfbatch.pipeline.export import export_batch, export_batches

BatchesArg = Annotated[
    list[str],
    typer.Argument(help="Batch id(s); several go to <output>/<batch id> each.", show_default=False),
]


def export(
    batches: BatchesArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to download into.")],
    part: Annotated[
        list[str] | None,
        typer.Option(
            "--part", "--part-name", help="Only this part of a multipart batch (repeatable)."
        ),
    ] = None,
    no_unpack: Annotated[
        bool, typer.Option("--no-unpack", help="Keep .tar/.tar.gz files as they are.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Download again files already in place.")
    ] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="Concurrent downloads (1-256).")
    ] = None,
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
        key = settings.api_key()
        check_output_folder(output)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    unpack = settings.export.unpack and not no_unpack
    parts = list(part) if part else None

    async def main() -> int:
        async with (
            open_services(settings) as services,
            export_progress(enabled=not json_out) as hook,
        ):
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
        export_report(results, json_out)
        stopped = next((r.stopped for r in results if r.stopped), None)
        if stopped is not None:
            print(f"rfbatch: error: {stopped}", file=sys.stderr, flush=True)
        return EXIT_OK if all(r.complete for r in results) else EXIT_ITEMS_FAILED

    run(main, key)
