"""The root command and its groups.

Only the command being run is imported: each pulls in its own stack (the emulator and the
daemon bring aiohttp's server, the job commands their tables), and a one-shot ``upload`` should
not pay for the others at every start. ``rfbatch --help`` (or no command) registers them all.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Sequence

import typer

from rfbatch import __version__

# name -> (module, attribute, is a group of subcommands); in the order --help lists them.
_COMMANDS: dict[str, tuple[str, str, bool]] = {
    "sync": ("rfbatch.cli.sync_cmd", "sync_command", False),
    "upload": ("rfbatch.cli.upload_cmd", "upload", False),
    "export": ("rfbatch.cli.export_cmd", "export", False),
    "run": ("rfbatch.cli.run_cmd", "run_daemon", False),
    "batch": ("rfbatch.cli.batch_cmd", "app", True),
    "job": ("rfbatch.cli.job_cmd", "app", True),
    "config": ("rfbatch.cli.config_cmd", "app", True),
    "emulator": ("rfbatch.cli.emulator_cmd", "emulator", False),
    "demo": ("rfbatch.cli.demo_cmd", "demo", False),
}


def _version(value: bool) -> None:
    if value:
        print(f"rfbatch {__version__}")
        raise typer.Exit(0)


def build_app(args: Sequence[str] | None = None) -> typer.Typer:
    """The root app, with only the command named first in ``args`` when it names one."""
    app = typer.Typer(
        name="rfbatch",
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

    first = next((a for a in args or () if not a.startswith("-")), None)
    names = [first] if first in _COMMANDS else list(_COMMANDS)
    for name in names:
        module, attribute, group = _COMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def main() -> None:
    # File names are not always valid UTF-8 (and servers can send lone surrogates): printing one
    # must never crash a run whose work is already done, so unprintable characters are escaped.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    build_app(sys.argv[1:])()
