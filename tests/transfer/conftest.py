"""Fixtures for the transfer tests: an API client (to mint signed URLs) and a Transfer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rfbatch.api import RoboflowClient
from rfbatch.emulator import Emulator
from rfbatch.transfer import Transfer, TransferConfig
from tests.api.support import FAST_RETRY, client_config


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[RoboflowClient]:
    async with RoboflowClient(client_config(emulator.base_url, emulator.config.api_key)) as c:
        yield c


@pytest.fixture
def transfer_config() -> TransferConfig:
    return TransferConfig(retry=FAST_RETRY, connect_timeout=5.0, read_timeout=20.0)


@pytest.fixture
async def transfer(transfer_config: TransferConfig) -> AsyncIterator[Transfer]:
    async with Transfer(transfer_config) as t:
        yield t
