"""The manifest: the :class:`~rfbatch.state.ledger.Ledger` kept in one SQLite file.

:class:`SqliteManifest` joins the table classes (files and members, batches and shards,
downloads, webhook events) and the pruning of :mod:`~rfbatch.state.retention` over one
:class:`~rfbatch.state.database.Database`: one connection, one worker thread, one exclusive
lock on the state directory. It lives in SQLite (WAL, ``synchronous=NORMAL``: a process crash
loses nothing committed) inside a state directory that must not be a source folder; writes go
many rows per transaction.
"""

from __future__ import annotations

from rfbatch.state.batches import BatchStore
from rfbatch.state.database import DB_NAME
from rfbatch.state.downloads import DownloadStore
from rfbatch.state.events import EventStore
from rfbatch.state.files import FileStore
from rfbatch.state.ledger import Ledger
from rfbatch.state.records import Forgotten
from rfbatch.state.retention import RetentionStore

__all__ = ["DB_NAME", "Forgotten", "SqliteManifest"]


class SqliteManifest(FileStore, BatchStore, DownloadStore, EventStore, RetentionStore, Ledger):
    """The SQLite :class:`~rfbatch.state.ledger.Ledger`. Open it with :meth:`open` (or
    ``async with``)."""
