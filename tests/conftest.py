"""Shared fixtures: every async test runs on asyncio with uvloop, against an in-process emulator."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator

# A fresh PostgreSQL database per test that asks: `pg` (a backend for ledgers), `ledger_url`.
from tests.state.postgres_support import ledger_url, pg  # noqa: F401

API_KEY = "test-secret-key-0123456789"
WORKSPACE = "test-ws"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"use_uvloop": True})


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Every coroutine test is an anyio test: no per-test marker to forget. The mark is put on the
    # function before collection (not on the items after), so parametrized tests get it too.
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


def emulator_config_with(tmp_path: Path, **options: Any) -> EmulatorConfig:
    """The tests' emulator configuration, with ``options`` (a module's fixture overrides it)."""
    return EmulatorConfig(
        api_key=API_KEY, workspace=WORKSPACE, state_dir=tmp_path / "emulator", **options
    )


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return emulator_config_with(tmp_path)


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    async with running_emulator(emulator_config) as emu:
        yield emu
