"""An offline emulator of the Roboflow Batch Processing and Data Staging APIs.

Start one with :func:`running_emulator` (in the current loop), :func:`emulator_in_thread` (for
sync code and subprocess peers) or :func:`serve` (blocking; ``rfbatch emulator``). Point a client
at ``Emulator.base_url`` with the configured API key. ``GET /_emulator/state`` (loopback only)
shows what arrived; :class:`FaultProfile` injects failures.
"""

from __future__ import annotations

from rfbatch.emulator.app import create_app
from rfbatch.emulator.config import EmulatorConfig
from rfbatch.emulator.faults import FaultProfile, FaultRates
from rfbatch.emulator.server import Emulator, emulator_in_thread, running_emulator, serve

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "FaultProfile",
    "FaultRates",
    "create_app",
    "emulator_in_thread",
    "running_emulator",
    "serve",
]
