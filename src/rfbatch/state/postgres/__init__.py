"""The ledger on PostgreSQL, shared by a fleet of workers (``[state] url``).

:class:`PostgresLedger` joins the per-concern classes of this package over one asyncpg pool,
as :class:`~rfbatch.state.manifest.SqliteManifest` does over one SQLite connection; both keep
the :class:`~rfbatch.state.ledger.Ledger` contract, which ``tests/state`` checks against each.
"""

from __future__ import annotations

from rfbatch.state.ledger import Ledger
from rfbatch.state.postgres.batches import PgBatchStore
from rfbatch.state.postgres.connection import SCHEMA_VERSION
from rfbatch.state.postgres.downloads import PgDownloadStore
from rfbatch.state.postgres.files import PgFileStore
from rfbatch.state.postgres.fleet import PgFleetStore
from rfbatch.state.postgres.retention import PgRetentionStore

__all__ = ["SCHEMA_VERSION", "PostgresLedger"]


class PostgresLedger(
    PgFileStore, PgBatchStore, PgDownloadStore, PgRetentionStore, PgFleetStore, Ledger
):
    """The PostgreSQL :class:`~rfbatch.state.ledger.Ledger`. Open it with :meth:`open`."""
