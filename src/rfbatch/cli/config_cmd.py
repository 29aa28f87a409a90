"""``rfbatch config check``: validate a config file and show the effective settings."""

from __future__ import annotations

import sys

import typer

from rfbatch.cli.common import settings_from
from rfbatch.cli.options import ConfigOpt
from rfbatch.cli.render import print_json
from rfbatch.settings import base_url_origin

app = typer.Typer(help="Check configuration.", no_args_is_help=True)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Print the effective settings (secrets masked); exit 2 when they are invalid."""
    settings = settings_from(config)
    # mode="json" renders SecretStr values as "**********": the key never reaches the output.
    print_json(settings.model_dump(mode="json"))
    # Which address the API calls go to, and why: the question an EU or staging user asks.
    origin = base_url_origin(config)
    print(f"rfbatch: api.base_url {settings.api.base_url} (from {origin})", file=sys.stderr)
