"""Webhook event ids already handled, so a redelivered event is acknowledged and not acted on.

The table bounds itself: recording an event also forgets ids older than
:data:`~rfbatch.state.ledger.EVENT_RETENTION`, at most once per :data:`_PRUNE_EVERY`, in the
same transaction. A daemon that runs for months keeps about a retention's worth of ids.
"""

from __future__ import annotations

import sqlite3

from rfbatch.state.database import Database, _key
from rfbatch.state.ledger import EVENT_RETENTION

# One DELETE an hour is negligible next to the inserts; the table has no index on received_at,
# so pruning on every insert would scan it each time.
_PRUNE_EVERY = 3600.0


def _prune(conn: sqlite3.Connection, older_than: float) -> int:
    return conn.execute("DELETE FROM webhook_events WHERE received_at < ?", (older_than,)).rowcount


class EventStore(Database):
    """The ``webhook_events`` table."""

    # When record_event prunes next; the first event after opening prunes. Only the worker
    # thread reads or writes it, like the connection.
    _next_prune: float = float("-inf")

    async def record_event(self, event_id: str) -> bool:
        """``True`` the first time ``event_id`` is recorded, ``False`` for a redelivery."""
        now = self._clock()

        def write() -> bool:
            prune = now >= self._next_prune
            with self._tx() as conn:
                if prune:
                    _prune(conn, now - EVENT_RETENTION)
                cursor = conn.execute(
                    "INSERT INTO webhook_events (event_id, received_at) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (_key(event_id), now),
                )
            # Only once committed: a prune that was rolled back is tried again next time.
            if prune:
                self._next_prune = now + _PRUNE_EVERY
            return cursor.rowcount == 1

        return await self._run(write)
