"""Running a command: settings, the async runner, exit codes and the errors that map to them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import typer

from rfbatch import allocator
from rfbatch.cli.render import print_json, print_report
from rfbatch.errors import ApiError, ConfigError, FatalError, RfbatchError
from rfbatch.obs import loop_errors
from rfbatch.obs.logging import configure_logging
from rfbatch.redact import redact_text
from rfbatch.settings import Settings, load_settings, unknown_env_keys

if TYPE_CHECKING:
    from rfbatch.api import RoboflowClient

# Exit codes, the same for every command.
EXIT_OK = 0
EXIT_ITEMS_FAILED = 1  # the run finished but some items failed or were skipped (or the job failed)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done
# A fault no file gets past (bad key, no permission, untrusted TLS certificate, no answer), or a
# request the service refused (404 unknown batch or job, 400, 409).
EXIT_API = 3
EXIT_INTERRUPTED = 130

T = TypeVar("T")


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
    for warning in unknown_env_keys():
        sys.stderr.write(f"rfbatch: warning: {warning}\n")
    key = settings.api.key.get_secret_value() if settings.api.key else None
    configure_logging(
        level=settings.log.level, fmt=settings.log.format, secrets=[key] if key else []
    )
    return settings


def run(main: Callable[[], Awaitable[int]], *secrets: str | None) -> NoReturn:
    """Run ``main`` on asyncio with uvloop and exit with its code, mapping errors to exit codes."""
    allocator.tune()  # before any worker thread allocates
    allocator.tune_collector()  # the command's modules are imported by now

    async def main_with_loop_errors_logged() -> int:
        loop_errors.install()
        return await main()

    try:
        code = anyio.run(
            main_with_loop_errors_logged, backend="asyncio", backend_options={"use_uvloop": True}
        )
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except (RfbatchError, BaseExceptionGroup) as exc:
        error = _most_severe(exc)
        if error is None:
            raise
        if isinstance(error, ConfigError):
            code = EXIT_USAGE
        elif isinstance(error, ApiError | FatalError):
            code = EXIT_API
        else:
            code = EXIT_ITEMS_FAILED
        fail(redact_text(str(error), *secrets), code)
    raise typer.Exit(code)


def _most_severe(exc: BaseException) -> RfbatchError | None:
    """The error that decides the exit code, looking inside task-group exception groups.

    A configuration error outranks a fatal error, which outranks an API error, then any other; a
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
    for kind in (ConfigError, FatalError, ApiError, RfbatchError):
        for e in ours:
            if isinstance(e, kind):
                return e
    return None


# Set by ``main`` when the command line asks for ``--json``: errors then also come as a JSON
# document on stdout, so a script that parses stdout always gets one.
errors_as_json = False


def fail(message: str, code: int) -> NoReturn:
    print(f"rfbatch: error: {message}", file=sys.stderr, flush=True)
    if errors_as_json:
        print_report({"error": {"exit_code": code, "message": message}})
    raise typer.Exit(code)


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


def reply(
    config: Path | None,
    fetch: Callable[[RoboflowClient], Awaitable[T]],
    show: Callable[[T], None],
    *,
    json_out: bool,
    as_json: Callable[[T], Any] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Run an API-shaped command that reads once and answers: ``check`` the arguments (usage,
    exit 2), ``fetch`` with a client, then print what came back as one JSON document
    (``as_json`` of it, or as it is) or ``show`` it."""
    # Imported here, not at the top: the commands that never talk to the API (emulator, config)
    # use this module too, and the client stack is most of a start-up.
    from rfbatch.app import open_client

    settings, key = settings_and_key(config)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)

    async def main() -> int:
        async with open_client(settings) as client:
            data = await fetch(client)
        if json_out:
            print_json(as_json(data) if as_json is not None else data)
        else:
            show(data)
        return EXIT_OK

    run(main, key)


async def collect(
    items: AsyncIterable[T], limit: int | None, row: Callable[[T], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The first ``limit`` items of a paged listing (all without one), each made a ``row``."""
    rows: list[dict[str, Any]] = []
    async for item in items:
        rows.append(row(item))
        if limit is not None and len(rows) >= limit:
            break
    return rows
