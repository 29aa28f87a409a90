"""The ledger implementations the contract suite runs against, and small builders of records.

Every backend in ``BACKENDS`` runs the whole contract suite: SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rfbatch.media import FoundFile
from rfbatch.state.ledger import Ledger
from rfbatch.state.manifest import SqliteManifest
from rfbatch.state.records import FILE_STATES, FileRow, ShardRow

ROOT = Path("/data/cams")

Clock = Callable[[], float]


def ff(rel: str, size: int = 10, mtime_ns: int = 1_000, kind: str = "image") -> FoundFile:
    return FoundFile(str(ROOT / rel), ROOT, rel, size, mtime_ns, 42, kind)  # type: ignore[arg-type]


# Reads the contract tests make through the ledger's own interface (nothing in rfbatch needs
# them, so the ledger does not offer them).


async def shard_of(ledger: Ledger, shard_id: str) -> ShardRow | None:
    """The shard's row, or ``None``."""
    return next((s for s in await ledger.list_shards() if s.shard_id == shard_id), None)


async def files_of_shard(ledger: Ledger, shard_id: str) -> list[FileRow]:
    """The files recorded in the shard, by path."""
    rows = [r async for r in ledger.files_in_state(FILE_STATES) if r.shard_id == shard_id]
    return sorted(rows, key=lambda r: r.path)


async def member_path(ledger: Ledger, batch_id: str, member: str) -> Path | None:
    """The file recorded under tar member name ``member`` in ``batch_id``, if any."""
    async for row in ledger.files_in_state(FILE_STATES, batch_id):
        if row.member_name == member:
            return row.path
    return None


class LedgerBackend(Protocol):
    """Opens ledgers over one store: each :meth:`open` sees what earlier ones committed."""

    async def open(self, *, clock: Clock = time.time) -> Ledger: ...

    async def dispose(self) -> None:
        """Remove the store, once the test is over."""


@dataclass(frozen=True)
class SqliteBackend:
    state_dir: Path

    async def open(self, *, clock: Clock = time.time) -> Ledger:
        return await SqliteManifest.open(self.state_dir, clock=clock)

    async def dispose(self) -> None:
        """Nothing to do: the test's temporary folder goes with it."""


# Name -> a backend over a fresh, empty store in the test's temporary folder.
def _postgres(_tmp_path: Path) -> LedgerBackend:
    from tests.state.postgres_support import PostgresBackend

    return PostgresBackend()


BACKENDS: dict[str, Callable[[Path], LedgerBackend]] = {
    "sqlite": lambda tmp_path: SqliteBackend(tmp_path / "state"),
    "postgres": _postgres,
}
