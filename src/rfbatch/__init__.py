"""rfbatch: move media in and out of Roboflow Batch Processing, fast and without losing a file."""

from __future__ import annotations

__version__ = "0.1.0"
