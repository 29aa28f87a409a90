"""Fixtures of the ledger contract suite: every test taking ``backend`` or ``ledger`` runs once
per implementation in :data:`tests.state.support.BACKENDS`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.state.ledger import Ledger
from tests.state.support import BACKENDS, LedgerBackend


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerBackend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def ledger(backend: LedgerBackend) -> AsyncIterator[Ledger]:
    async with await backend.open() as opened:
        yield opened
