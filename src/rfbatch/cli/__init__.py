"""The ``rfbatch`` command line: one Typer app, a module per command group."""

from __future__ import annotations

from rfbatch.cli.main import build_app, main

__all__ = ["build_app", "main"]
