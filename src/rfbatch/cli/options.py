"""The options and arguments several commands take, declared once so they read the same, and
the checks and defaults that go with them.

Each is a ``typing.Annotated`` type: a command declares ``config: ConfigOpt = None``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rfbatch.errors import ConfigError
from rfbatch.settings import split_host_port

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


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value} is not greater than 0.")
    return value


VideoFpsOpt = Annotated[
    float | None,
    typer.Option(
        "--max-video-fps", callback=_positive, help="Frame rate cap (over 0); video jobs only."
    ),
]


def _host_port(value: str | None) -> str | None:
    if value is not None:
        try:
            split_host_port(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


WEBHOOK_LISTEN_FLAG = "--webhook-listen"
WebhookListenOpt = Annotated[
    str | None,
    typer.Option(
        WEBHOOK_LISTEN_FLAG, callback=_host_port, help="HOST:PORT to receive job notifications on."
    ),
]

# The workflow's parameters, three ways that merge in this order (a later one wins key by key):
# a JSON file (the official client's --workflow-params), a JSON object, KEY=VALUE pairs.
WorkflowParamsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--workflow-params",
        help="Path to a JSON document with the workflow parameters (as inference-cli).",
        dir_okay=False,
    ),
]
WorkflowParametersOpt = Annotated[
    str | None,
    typer.Option("--workflow-parameters", help="Workflow parameters as a JSON object."),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Workflow parameter KEY=VALUE (VALUE may be JSON); repeat."),
]


def workflow_parameters(
    path: Path | None, text: str | None, pairs: Sequence[str] | None
) -> dict[str, Any] | None:
    """The parameters given by ``--workflow-params`` (a file), ``--workflow-parameters`` (JSON)
    and ``--param`` (pairs), merged in that order; ``None`` when none of them was given.

    A ConfigError names the flag at fault.
    """
    if path is None and text is None and not pairs:
        return None
    params: dict[str, Any] = {}
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--workflow-params: cannot read {path}: {exc.strerror}") from None
        params.update(_json_object(raw, f"--workflow-params: {path}"))
    if text is not None:
        params.update(_json_object(text, "--workflow-parameters"))
    params.update(_parse_params(pairs or []))
    return params


def _json_object(raw: str | bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{where} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "value")
        raise ConfigError(f"{where} holds a JSON {kind}, not an object")
    return value


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON is taken as JSON, else as a string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


# --- commands that upload (upload, sync) ------------------------------------------------------

SettleOpt = Annotated[
    float | None, typer.Option(min=0.0, help="Quiet time before a file is sent (seconds).")
]
ShardWorkersOpt = Annotated[
    int | None, typer.Option(min=1, max=64, help="Concurrent shard uploads (1-64).")
]
VideoWorkersOpt = Annotated[
    int | None, typer.Option(min=1, max=64, help="Concurrent video uploads (1-64).")
]


def check_sources(sources: list[Path]) -> None:
    """Every ``SourcesArg`` folder must exist: a typo should stop the run before it starts."""
    for src in sources:
        if not src.is_dir():
            raise ConfigError(f"source {src} is not a folder")


def videos_batch_for(batch: str) -> str:
    """The default of ``VideosBatchOpt``: images and videos never share a batch."""
    return f"{batch[:57]}-videos"
