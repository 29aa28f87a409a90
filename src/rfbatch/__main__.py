"""``python -m rfbatch`` runs the command line."""

from __future__ import annotations

from rfbatch.cli import main

main()
