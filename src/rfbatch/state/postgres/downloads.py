"""Result downloads and webhook event ids on PostgreSQL (see :mod:`rfbatch.state.downloads`
and :mod:`rfbatch.state.events`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rfbatch.state.ledger import EVENT_RETENTION
from rfbatch.state.postgres.connection import (
    Conn,
    PgDatabase,
    _count,
    _key,
    _opt_key,
)
from rfbatch.state.records import DOWNLOAD_STATES, DownloadMark, DownloadRow, DownloadState
from rfbatch.state.rows import DOWNLOAD_COLUMNS, check, download_row, known_states

# Recording an event prunes old ids at most this often (an index serves the DELETE).
_PRUNE_EVERY = 3600.0


async def prune_events(conn: Conn, older_than: float) -> int:
    """Forget the event ids received before ``older_than``; return how many."""
    return _count(
        await conn.execute("DELETE FROM webhook_events WHERE received_at < $1", older_than)
    )


class PgDownloadStore(PgDatabase):
    """The ``downloads`` and ``webhook_events`` tables."""

    _next_prune: float = float("-inf")

    async def add_downloads(
        self, batch_id: str, items: Sequence[tuple[str | None, str, int | None]]
    ) -> int:
        if not items:
            return 0
        parts = [_key(part or "") for part, _name, _size in items]
        names = [_key(name) for _part, name, _size in items]
        sizes = [size for _part, _name, size in items]
        async with self._tx() as conn:
            status = await conn.execute(
                "INSERT INTO downloads (batch_id, part_name, file_name, size, updated_at, state)"
                " SELECT $1, p, n, s, $5, 'pending' FROM unnest($2::bytea[], $3::bytea[],"
                " $4::bigint[]) AS t(p, n, s) ON CONFLICT DO NOTHING",
                batch_id,
                parts,
                names,
                sizes,
                self._clock(),
            )
        return _count(status)

    async def mark_downloads(
        self, batch_id: str, state: DownloadState, marks: Sequence[DownloadMark]
    ) -> None:
        check(state, DOWNLOAD_STATES, "download state")
        if not marks:
            return
        # One row per file: the last mark of a file given twice wins, as it would one by one.
        latest = {(m.part_name or "", m.file_name): m for m in marks}
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO downloads ({DOWNLOAD_COLUMNS})"  # noqa: S608
                " SELECT $1, p, n, s, $5, w, $7 FROM unnest($2::bytea[], $3::bytea[],"
                " $4::bigint[], $6::bytea[]) AS t(p, n, s, w)"
                " ON CONFLICT (batch_id, part_name, file_name) DO UPDATE SET"
                " size = COALESCE(excluded.size, downloads.size), state = excluded.state,"
                " path = COALESCE(excluded.path, downloads.path),"
                " updated_at = excluded.updated_at",
                batch_id,
                [_key(part) for part, _name in latest],
                [_key(name) for _part, name in latest],
                [m.size for m in latest.values()],
                state,
                [_opt_key(m.path) for m in latest.values()],
                self._clock(),
            )

    async def list_downloads(
        self, batch_id: str, *, states: Iterable[DownloadState] | None = None
    ) -> list[DownloadRow]:
        sql = f"SELECT {DOWNLOAD_COLUMNS} FROM downloads WHERE batch_id = $1"  # noqa: S608
        if states is None:
            rows = await self._fetch(sql + " ORDER BY part_name, file_name", batch_id)
        else:
            wanted = known_states(states, DOWNLOAD_STATES, "download state")
            rows = await self._fetch(
                sql + " AND state = ANY($2::text[]) ORDER BY part_name, file_name",
                batch_id,
                wanted,
            )
        return [download_row(r) for r in rows]

    # -- webhook events -----------------------------------------------------------------

    async def record_event(self, event_id: str) -> bool:
        now = self._clock()
        prune = now >= self._next_prune
        async with self._tx() as conn:
            if prune:
                await prune_events(conn, now - EVENT_RETENTION)
            status = await conn.execute(
                "INSERT INTO webhook_events (event_id, received_at) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                _key(event_id),
                now,
            )
        if prune:  # only once committed
            self._next_prune = now + _PRUNE_EVERY
        return _count(status) == 1
