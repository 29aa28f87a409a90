"""The options and arguments several commands take, declared once so they read the same, and
the checks and defaults that go with them.

Each is a ``typing.Annotated`` type: a command declares ``config: ConfigOpt = None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from rfbatch.errors import ConfigError

# --- every command ---------------------------------------------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file.", exists=False, dir_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error.")
]
LogFormatOpt = Annotated[
    str | None, typer.Option("--log-format", help="auto, json or console (logs go to stderr).")
]

# --- commands that move files (upload, sync, export) -----------------------------------------

SourcesArg = Annotated[list[Path], typer.Argument(help="Folders to upload (recursive).")]
VideosBatchOpt = Annotated[
    str | None, typer.Option(help="Videos batch id (default: <batch>-videos).")
]
StateDirOpt = Annotated[Path | None, typer.Option(help="Where the manifest lives.")]

# --- commands that start jobs (job start, job restart, sync) ---------------------------------
# Checked by the parser, so a bad value is named by its flag (exit 2) before any work starts.

MachineOpt = Annotated[
    Literal["cpu", "gpu"] | None, typer.Option("--machine-type", help="cpu or gpu.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers-per-machine", min=1, max=64, help="Workers per machine (1-64)."),
]
RuntimeOpt = Annotated[
    int | None,
    typer.Option(
        "--max-runtime-seconds",
        min=1,
        help="Cumulative machine seconds (sent as processingTimeoutSeconds).",
    ),
]
ParallelOpt = Annotated[int | None, typer.Option("--max-parallel-tasks", min=1, help="Task cap.")]
FailureRateOpt = Annotated[
    float | None,
    typer.Option("--max-image-failure-rate", min=0.0, max=1.0, help="0.0-1.0; image jobs only."),
]
AggregationOpt = Annotated[
    Literal["csv", "jsonl"] | None, typer.Option("--aggregation-format", help="csv or jsonl.")
]
VideoFpsOpt = Annotated[
    float | None,
    typer.Option("--max-video-fps", help="Frame rate cap; video jobs only."),
]

# --- commands that upload (upload, sync) ------------------------------------------------------

SettleOpt = Annotated[
    float | None, typer.Option(min=0.0, help="Quiet time before a file is sent (seconds).")
]
ShardWorkersOpt = Annotated[int | None, typer.Option(min=1, help="Concurrent shard uploads.")]
VideoWorkersOpt = Annotated[int | None, typer.Option(min=1, help="Concurrent video uploads.")]


def check_sources(sources: list[Path]) -> None:
    """Every ``SourcesArg`` folder must exist: a typo should stop the run before it starts."""
    for src in sources:
        if not src.is_dir():
            raise ConfigError(f"source {src} is not a folder")


def videos_batch_for(batch: str) -> str:
    """The default of ``VideosBatchOpt``: images and videos never share a batch."""
    return f"{batch[:57]}-videos"
