"""What every command shares: option types, the async runner, exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from rich.console import Console
from rich.table import Table

from rfbatch.api import RoboflowClient
from rfbatch.app import open_client
from rfbatch.errors import ApiError, ConfigError, RfbatchError
from rfbatch.obs.logging import configure_logging
from rfbatch.redact import redact_text
from rfbatch.settings import Settings, load_settings

# Exit codes, the same for every command.
EXIT_OK = 0
EXIT_ITEMS_FAILED = 1  # the run finished but some items failed or were skipped (or the job failed)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done
EXIT_API = 3  # fatal API error (bad key, no permission, service refusing)
EXIT_INTERRUPTED = 130

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


def settings_from(
    config: Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    log_level: str | None = None,
    log_format: str | None = None,
) -> Settings:
    """Load settings and configure logging, or exit 2 with one line naming the problem."""
    tree = dict(overrides or {})
    tree["log"] = {"level": log_level, "format": log_format}
    try:
        settings = load_settings(config, tree)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    key = settings.api.key.get_secret_value() if settings.api.key else None
    configure_logging(
        level=settings.log.level, fmt=settings.log.format, secrets=[key] if key else []
    )
    return settings


def run(main: Callable[[], Awaitable[int]], *secrets: str | None) -> NoReturn:
    """Run ``main`` on asyncio with uvloop and exit with its code, mapping errors to exit codes."""
    try:
        code = anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except (RfbatchError, BaseExceptionGroup) as exc:
        error = _most_severe(exc)
        if error is None:
            raise
        if isinstance(error, ConfigError):
            code = EXIT_USAGE
        elif isinstance(error, ApiError):
            code = EXIT_API
        else:
            code = EXIT_ITEMS_FAILED
        fail(redact_text(str(error), *secrets), code)
    raise typer.Exit(code)


def _most_severe(exc: BaseException) -> RfbatchError | None:
    """The error that decides the exit code, looking inside task-group exception groups.

    A configuration error outranks an API error, which outranks any other rfbatch error; a
    foreign exception anywhere in the group means a bug, and is re-raised with its traceback.
    """
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    ours = [e for e in leaves if isinstance(e, RfbatchError)]
    if len(ours) != len(leaves):
        return None
    for kind in (ConfigError, ApiError, RfbatchError):
        for e in ours:
            if isinstance(e, kind):
                return e
    return None


def fail(message: str, code: int) -> NoReturn:
    print(f"rfbatch: error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as a rich table on stdout; nested values shown as compact JSON."""
    out = Table(*columns)
    for row in rows:
        out.add_row(*(cell(row.get(c)) for c in columns))
    Console().print(out)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def settings_and_key(
    config: Path | None, log_level: str | None = None, log_format: str | None = None
) -> tuple[Settings, str]:
    """Settings plus the API key, or exit 2 saying how to give one."""
    settings = settings_from(config, log_level=log_level, log_format=log_format)
    try:
        key = settings.api_key()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    return settings, key


def with_client(
    config: Path | None,
    body: Callable[[RoboflowClient], Awaitable[int]],
    *,
    check: Callable[[], None] | None = None,
) -> None:
    """Run an API-shaped command: ``check`` (usage, exit 2) first, then ``body`` with a client."""
    settings, key = settings_and_key(config)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)

    async def main() -> int:
        async with open_client(settings) as client:
            return await body(client)

    run(main, key)
