"""Jobs tests run against an emulator whose job clock is fast (a tick of 10 ms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfbatch.emulator import EmulatorConfig
from tests.conftest import API_KEY, WORKSPACE


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(
        api_key=API_KEY, workspace=WORKSPACE, state_dir=tmp_path / "emulator", job_tick=0.01
    )
