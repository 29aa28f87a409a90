"""``rfbatch config check``: validate a config file and show the effective settings."""

from __future__ import annotations

import typer

from rfbatch.cli.common import EXIT_USAGE, fail
from rfbatch.cli.options import ConfigOpt
from rfbatch.cli.render import print_json
from rfbatch.errors import ConfigError
from rfbatch.settings import load_settings

app = typer.Typer(help="Check configuration.", no_args_is_help=True)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Print the effective settings (secrets masked); exit 2 when they are invalid."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    # mode="json" renders SecretStr values as "**********": the key never reaches the output.
    print_json(settings.model_dump(mode="json"))
