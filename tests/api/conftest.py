"""Fixtures for the API client tests: a client on the in-process emulator with instant retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rfbatch.api import RoboflowClient
from rfbatch.emulator import Emulator
from tests.api.support import client_config


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[RoboflowClient]:
    config = client_config(emulator.base_url, emulator.config.api_key)
    async with RoboflowClient(config) as c:
        yield c
