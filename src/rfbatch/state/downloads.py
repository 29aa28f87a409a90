"""The files of a batch's results: which were fetched, where they were written, which failed.

A row is keyed by batch, part (``""`` when the batch is not split into parts) and file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rfbatch.state.database import Database, _check, _key, _opt_key, _where
from rfbatch.state.records import DOWNLOAD_STATES, DownloadMark, DownloadRow, DownloadState
from rfbatch.state.rows import DOWNLOAD_COLUMNS, download_row


class DownloadStore(Database):
    """The ``downloads`` table."""

    async def add_downloads(
        self, batch_id: str, items: Sequence[tuple[str | None, str, int | None]]
    ) -> int:
        """Record ``(part_name, file_name, size)`` entries as ``pending``; known ones are kept.

        Returns how many were new. ``part_name`` ``None`` means the batch has no parts.
        """
        now = self._clock()
        rows = [(batch_id, _key(part or ""), _key(name), size, now) for part, name, size in items]

        def write() -> int:
            with self._tx() as conn:
                return conn.executemany(
                    "INSERT INTO downloads (batch_id, part_name, file_name, size, updated_at,"
                    " state) VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING",
                    rows,
                ).rowcount

        return await self._run(write)

    async def mark_downloads(
        self, batch_id: str, state: DownloadState, marks: Sequence[DownloadMark]
    ) -> None:
        """Set the state of many downloads in one transaction (rows are created if needed)."""
        _check(state, DOWNLOAD_STATES, "download state")
        now = self._clock()
        rows = [
            (
                batch_id,
                _key(m.part_name or ""),
                _key(m.file_name),
                m.size,
                state,
                _opt_key(m.path),
                now,
            )
            for m in marks
        ]

        def write() -> None:
            with self._tx() as conn:
                conn.executemany(
                    f"INSERT INTO downloads ({DOWNLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                    " ON CONFLICT DO UPDATE SET size = COALESCE(excluded.size, size),"
                    " state = excluded.state, path = COALESCE(excluded.path, path),"
                    " updated_at = excluded.updated_at",
                    rows,
                )

        if rows:
            await self._run(write)

    async def list_downloads(
        self, batch_id: str, *, states: Iterable[DownloadState] | None = None
    ) -> list[DownloadRow]:
        where, args = _where(batch_id=batch_id, states=states, allowed=DOWNLOAD_STATES)
        sql = f"SELECT {DOWNLOAD_COLUMNS} FROM downloads{where} ORDER BY part_name, file_name"  # noqa: S608
        return await self._run(lambda: [download_row(r) for r in self._conn.execute(sql, args)])
