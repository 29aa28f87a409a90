"""``rfbatch config check``: validate a config file and show the effective settings."""

from __future__ import annotations

import typer

from rfbatch.cli.common import settings_from
from rfbatch.cli.options import ConfigOpt
from rfbatch.cli.render import print_json

app = typer.Typer(help="Check configuration.", no_args_is_help=True)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Print the effective settings (secrets masked); exit 2 when they are invalid."""
    settings = settings_from(config)
    # mode="json" renders SecretStr values as "**********": the key never reaches the output.
    print_json(settings.model_dump(mode="json"))
