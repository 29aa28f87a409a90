"""``python -m tests.export.entry export ...``: the export command in a root app of its own.

The lead wires ``export_cmd.export`` into ``rfbatch``; this entry point runs the very same
function the same way (a root Typer app with ``export`` as a subcommand), so the CLI tests do
not depend on that wiring.
"""

from __future__ import annotations

import typer

from rfbatch.cli.export_cmd import export

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _root() -> None:
    """rfbatch (export only)."""


app.command()(export)

if __name__ == "__main__":
    app()
