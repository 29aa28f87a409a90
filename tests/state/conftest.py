"""Fixtures of the ledger contract suite: every test taking ``backend`` or ``ledger`` runs once
per implementation in :data:`tests.state.support.BACKENDS`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.state.ledger import Ledger
from tests.state.support import BACKENDS, LedgerBackend


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerBackend]:
    made = BACKENDS[request.param](tmp_path)
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
async def ledger(backend: LedgerBackend) -> AsyncIterator[Ledger]:
    async with await backend.open() as opened:
        yield opened
