"""The root command and its groups."""

from __future__ import annotations

import io
import sys

import typer

from rfbatch import __version__
from rfbatch.cli import batch_cmd, config_cmd, job_cmd
from rfbatch.cli.demo_cmd import demo
from rfbatch.cli.emulator_cmd import emulator
from rfbatch.cli.export_cmd import export
from rfbatch.cli.run_cmd import run_daemon
from rfbatch.cli.sync_cmd import sync_command
from rfbatch.cli.upload_cmd import upload

app = typer.Typer(
    name="rfbatch",
    help="Move media in and out of Roboflow Batch Processing, fast and without losing a file.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"rfbatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Move media in and out of Roboflow Batch Processing."""


app.command("sync")(sync_command)
app.command()(upload)
app.command()(export)
app.command("run")(run_daemon)
app.add_typer(batch_cmd.app, name="batch")
app.add_typer(job_cmd.app, name="job")
app.add_typer(config_cmd.app, name="config")
app.command()(emulator)
app.command()(demo)


def main() -> None:
    # File names are not always valid UTF-8 (and servers can send lone surrogates): printing one
    # must never crash a run whose work is already done, so unprintable characters are escaped.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    app()
