"""The fleet on PostgreSQL: leases, claims and fillers (see :mod:`rfbatch.state.fleet`).

A worker is live while ``workers.lease_until`` lies ahead of the server's clock (one clock for
every box: no skew between them). Files and batches name their claimant in ``owner``; a claim
holds while its owner is live, so a worker's death releases all it held at once, when its lease
lapses, with no row to clean up. Claims are taken by one ``UPDATE`` whose ``WHERE`` checks the
owner again once the row is locked (``FOR UPDATE SKIP LOCKED`` where a worker takes whatever is
free), so of two workers reaching for one row exactly one gets it.
"""

from __future__ import annotations

from collections.abc import Iterable

from rfbatch.state.fleet import CLAIMED_STATES, FleetStatus, WorkerInfo
from rfbatch.state.postgres.connection import PgDatabase, claimable, live
from rfbatch.state.records import BATCH_STATES, FILE_STATES, BatchState, FileRow
from rfbatch.state.rows import FILE_COLUMNS, file_row, known_states

_ADOPT_PAGE = 1000


class PgFleetStore(PgDatabase):
    """Leases, claims and fillers of the fleet."""

    shared = True

    async def adopt(self, *, limit: int | None = None) -> list[FileRow]:
        adopted: list[FileRow] = []
        while limit is None or len(adopted) < limit:
            page = _ADOPT_PAGE if limit is None else min(_ADOPT_PAGE, limit - len(adopted))
            async with self._tx() as conn:
                rows = await conn.fetch(
                    "WITH gone AS (SELECT path, state AS was FROM files f"  # noqa: S608
                    " WHERE f.state = ANY($2::text[]) AND (f.owner IS DISTINCT FROM $1 OR $4)"
                    f" AND {claimable('f.owner', '$1')}"
                    " ORDER BY f.path LIMIT $3 FOR UPDATE SKIP LOCKED)"
                    " UPDATE files SET owner = $1,"
                    " state = CASE WHEN gone.was IN ('packed', 'uploading') THEN 'seen'"
                    " ELSE files.state END,"
                    " last_error = CASE WHEN gone.was IN ('packed', 'uploading')"
                    " THEN 'interrupted' ELSE files.last_error END,"
                    " updated_at = $5 FROM gone WHERE files.path = gone.path"
                    f" RETURNING {_returned('files')}",
                    self.worker_id,
                    list(CLAIMED_STATES),
                    page,
                    not self._adopted_own,
                    self._clock(),
                )
            self._adopted_own = True
            adopted += [file_row(r) for r in rows]
            if len(rows) < page:
                break
        return adopted

    async def take_slots(self, batch_id: str, want: int, limit: int) -> int:
        async with self._tx() as conn:
            granted = await conn.fetchval(
                "WITH g AS (SELECT batch_id, LEAST($2, $3 - slots) AS n FROM batches"
                " WHERE batch_id = $1 AND state = 'open' FOR UPDATE)"
                " UPDATE batches b SET slots = b.slots + g.n FROM g"
                " WHERE b.batch_id = g.batch_id AND g.n > 0 RETURNING g.n",
                batch_id,
                want,
                limit,
            )
        return int(granted or 0)

    async def seal(self, batch_id: str) -> bool:
        async with self._tx() as conn:
            sealed = await conn.fetchval(
                "UPDATE batches SET state = 'sealed', updated_at = $2"
                " WHERE batch_id = $1 AND state = 'open' RETURNING 1",
                batch_id,
                self._clock(),
            )
        return sealed is not None

    async def join(self, batch_id: str) -> bool:
        async with self._tx() as conn:
            # FOR SHARE: a seal waits for this join to commit, so the worker driving the batch
            # sees every filler that joined before the seal, and none joins after it.
            state = await conn.fetchval(
                "SELECT state FROM batches WHERE batch_id = $1 FOR SHARE", batch_id
            )
            if state != "open":
                return False
            await conn.execute(
                "INSERT INTO batch_fillers (batch_id, worker_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                batch_id,
                self.worker_id,
            )
        return True

    async def leave(self, batch_id: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM batch_fillers WHERE batch_id = $1 AND worker_id = $2",
                batch_id,
                self.worker_id,
            )

    async def busy(self, batch_id: str) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM batch_fillers bf WHERE bf.batch_id = $2 AND bf.worker_id != $1"  # noqa: S608
            f" AND {live('bf.worker_id')} LIMIT 1",
            self.worker_id,
            batch_id,
        )
        return bool(rows)

    async def claim_batches(self, states: Iterable[BatchState], limit: int) -> list[str]:
        wanted = known_states(states, BATCH_STATES, "batch state")
        if limit <= 0:
            return []
        async with self._tx() as conn:
            rows = await conn.fetch(
                "WITH c AS (SELECT batch_id, created_at FROM batches b"  # noqa: S608
                " WHERE b.state = ANY($2::text[])"
                f" AND {claimable('b.owner', '$1')}"
                " ORDER BY (b.owner = $1) DESC NULLS LAST, b.created_at, b.batch_id"
                " LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE batches SET owner = $1 FROM c WHERE batches.batch_id = c.batch_id"
                " RETURNING batches.batch_id, c.created_at",
                self.worker_id,
                wanted,
                limit,
            )
        return [r[0] for r in sorted(rows, key=lambda r: (r[1], r[0]))]

    async def fleet_status(self) -> FleetStatus:
        async with self._tx() as conn:
            workers = await conn.fetch(
                "SELECT w.worker_id, w.host, w.pid, extract(epoch FROM w.started_at),"
                " extract(epoch FROM now() - w.heartbeat_at), w.lease_until > now(),"
                " w.stopped_at IS NOT NULL,"
                " (SELECT count(*) FROM files f WHERE f.owner = w.worker_id"
                "  AND f.state = ANY($1::text[])),"
                " (SELECT count(*) FROM batches b WHERE b.owner = w.worker_id"
                "  AND b.state NOT IN ('open', 'exported', 'failed', 'empty'))"
                " FROM workers w ORDER BY w.started_at, w.worker_id",
                list(CLAIMED_STATES),
            )
            files: dict[str, int] = dict.fromkeys(FILE_STATES, 0)
            for state, n in await conn.fetch("SELECT state, count(*) FROM files GROUP BY state"):
                files[state] = int(n)
            batches = {
                state: int(n)
                for state, n in await conn.fetch(
                    "SELECT state, count(*) FROM batches GROUP BY state ORDER BY state"
                )
            }
            unclaimed = await conn.fetchval(
                "SELECT count(*) FROM files f WHERE f.state = ANY($1::text[])"  # noqa: S608
                f" AND NOT {live('f.owner')}",
                list(CLAIMED_STATES),
            )
        return FleetStatus(
            shared=True,
            workers=[
                WorkerInfo(
                    worker_id=r[0],
                    host=r[1],
                    pid=r[2],
                    started_at=float(r[3]),
                    heartbeat_age=float(r[4]),
                    live=r[5],
                    stopped=r[6],
                    files_claimed=int(r[7]),
                    batches_claimed=int(r[8]),
                )
                for r in workers
            ],
            files=files,
            batches=batches,
            unclaimed=int(unclaimed or 0),
        )


def _returned(table: str) -> str:
    """The file columns of ``table``, qualified (an UPDATE ... FROM names two tables)."""
    return ", ".join(f"{table}.{c.strip()}" for c in FILE_COLUMNS.split(","))
