"""The root command and the registry of its commands.

A command's module is imported only when that command runs: each pulls in its own stack (the
emulator and the daemon bring aiohttp's server, the job commands their schemas), and neither a
one-shot ``upload`` nor ``rfbatch --help`` or ``--version`` should pay for the others. The root
help lists the commands from the one-line summaries kept here.
"""

from __future__ import annotations

import importlib
import io
import sys
from dataclasses import dataclass
from typing import Any

import typer
from typer import _click  # typer ships its own click: these are the types its groups speak
from typer.core import TyperCommand, TyperGroup

from rfbatch import __version__


@dataclass(frozen=True, slots=True)
class _Command:
    module: str
    attribute: str  # a Typer app (a group of subcommands) or a command function
    summary: str  # what the root help shows; the first paragraph of the command's own help


# In the order the root help lists them.
COMMANDS: dict[str, _Command] = {
    "sync": _Command(
        "rfbatch.cli.sync_cmd",
        "sync_command",
        "Upload, wait for ingest, run the workflow, wait for the job and download its results.",
    ),
    "upload": _Command(
        "rfbatch.cli.upload_cmd",
        "upload",
        "Upload images (as streamed tar shards) and videos from folders, then confirm their "
        "ingest.",
    ),
    "export": _Command(
        "rfbatch.cli.export_cmd",
        "export",
        "Download every file of a batch, resuming where an earlier run stopped.",
    ),
    "run": _Command(
        "rfbatch.cli.run_cmd",
        "run_daemon",
        "Watch folders and run upload, ingest, job and export continuously until SIGTERM.",
    ),
    "emulator": _Command(
        "rfbatch.cli.emulator_cmd", "emulator", "Serve the Roboflow Batch Processing API offline."
    ),
    "demo": _Command(
        "rfbatch.cli.demo_cmd",
        "demo",
        "Run the whole loop (upload, ingest, job, export) against an in-process emulator.",
    ),
    "batch": _Command("rfbatch.cli.batch_cmd", "app", "Inspect staging batches."),
    "ingest": _Command(
        "rfbatch.cli.ingest_cmd",
        "app",
        "Fill a batch from URLs (references) or a RoboQL query, then wait for its ingest.",
    ),
    "job": _Command(
        "rfbatch.cli.job_cmd", "app", "Start, follow and manage batch-processing jobs."
    ),
    "status": _Command(
        "rfbatch.cli.status_cmd",
        "status",
        "Show the workers sharing the ledger, what each holds, and the backlog per state.",
    ),
    "config": _Command("rfbatch.cli.config_cmd", "app", "Check configuration."),
}


def load_command(name: str) -> _click.Command:
    """Import command ``name``'s module and build its click command (a group for a Typer app)."""
    entry = COMMANDS[name]
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        return typer.main.get_group(target)
    # A lone command in an app of its own is built as that very command, not a group.
    single = typer.Typer(add_completion=False)
    single.command(name)(target)
    return typer.main.get_command(single)


class _LazyGroup(TyperGroup):
    """Lists every command by its summary; builds the real one only when it is invoked."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, entry in COMMANDS.items():
            self.add_command(TyperCommand(name, help=entry.summary))

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        # The listed entry answers for the name (and for a typo, with its suggestions).
        name, listed, rest = super().resolve_command(ctx, args)
        return name, load_command(name) if name is not None else listed, rest


def _version(value: bool) -> None:
    if value:
        print(f"rfbatch {__version__}")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="rfbatch",
        cls=_LazyGroup,
        help="Move media in and out of Roboflow Batch Processing, fast and without losing a file.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """Move media in and out of Roboflow Batch Processing."""

    return app


def main() -> None:
    # File names are not always valid UTF-8 (and servers can send lone surrogates): printing one
    # must never crash a run whose work is already done, so unprintable characters are escaped.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = sys.argv[1:]
    if "--json" not in (args[: args.index("--")] if "--" in args else args):
        build_app()()
        return
    sys.exit(_main_with_json_errors(args))


def _main_with_json_errors(args: list[str]) -> int:
    """Run a ``--json`` command line: every error, a usage error too, also comes as a JSON
    document on stdout (see ``common.fail``)."""
    from rfbatch.cli import common

    common.errors_as_json = True
    command = typer.main.get_command(build_app())
    try:
        code = command.main(args=args, prog_name="rfbatch", standalone_mode=False)
    except typer.Abort:
        code = _error(common, "interrupted", common.EXIT_INTERRUPTED)
    except _click.ClickException as exc:
        code = _error(common, exc.format_message(), exc.exit_code)
    return code if isinstance(code, int) else 0


def _error(common: Any, message: str, code: int) -> int:
    """What ``common.fail`` prints, and its exit code."""
    try:
        common.fail(message, code)
    except typer.Exit as done:
        return int(done.exit_code)
    raise AssertionError("fail() returned")
