"""What both ledgers share: the column lists and row builders, the check of states, and the
retention's pass over files (:func:`forget_gone`).

SQLite hands back tuples and PostgreSQL (asyncpg) records; both index by position, and both give
a key column either as text or as the bytes of its surrogatepass UTF-8 (see each ledger's key
helpers), which :func:`unkey` turns back into the same ``str``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio.to_thread

from rfbatch.errors import InvalidStateError
from rfbatch.state.records import BatchRow, DownloadRow, FileRow, ShardRow

FILE_COLUMNS = (
    "path, root, rel, size, mtime_ns, inode, kind, state, batch_id, shard_id, member_name, "
    "attempts, last_error, updated_at"
)
SHARD_COLUMNS = (
    "shard_id, batch_id, state, file_count, bytes, attempts, last_error, created_at, updated_at"
)
BATCH_COLUMNS = "batch_id, kind, state, expected_count, job_id, created_at, updated_at, info"
DOWNLOAD_COLUMNS = "batch_id, part_name, file_name, size, state, path, updated_at"


def check(value: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a state or kind outside ``allowed``, before anything is written."""
    if value not in allowed:
        raise InvalidStateError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def known_states(states: Iterable[str], allowed: tuple[str, ...], what: str = "state") -> list[str]:
    """``states`` once each, in order, every one checked."""
    wanted = list(dict.fromkeys(states))
    for s in wanted:
        check(s, allowed, what)
    return wanted


class Row(Protocol):
    def __getitem__(self, index: int, /) -> Any: ...


def unkey(value: str | bytes) -> str:
    return bytes(value).decode("utf-8", "surrogatepass") if not isinstance(value, str) else value


def path_of(value: str | bytes | None) -> Path | None:
    return None if value is None else Path(unkey(value))


def file_row(r: Row) -> FileRow:
    return FileRow(
        path=Path(unkey(r[0])),
        root=path_of(r[1]),
        rel=unkey(r[2]) if r[2] is not None else None,
        size=r[3],
        mtime_ns=r[4],
        inode=r[5],
        kind=r[6],
        state=r[7],
        batch_id=r[8],
        shard_id=r[9],
        member_name=r[10],
        attempts=r[11],
        last_error=r[12],
        updated_at=r[13],
    )


def shard_row(r: Row) -> ShardRow:
    return ShardRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])


def batch_row(r: Row) -> BatchRow:
    return BatchRow(
        batch_id=r[0],
        kind=r[1],
        state=r[2],
        expected_count=r[3],
        job_id=r[4],
        created_at=r[5],
        updated_at=r[6],
        info=json.loads(r[7]),
    )


def download_row(r: Row) -> DownloadRow:
    return DownloadRow(
        batch_id=r[0],
        part_name=unkey(r[1]),
        file_name=unkey(r[2]),
        size=r[3],
        state=r[4],
        path=path_of(r[5]),
        updated_at=r[6],
    )


K = TypeVar("K", bound=str | bytes)


def _gone(keys: Sequence[K], exists: Callable[[str], bool]) -> list[K]:
    return [k for k in keys if not exists(unkey(k))]


async def forget_gone(
    page_after: Callable[[K], Awaitable[Sequence[K]]],
    forget: Callable[[list[K]], Awaitable[int]],
    exists: Callable[[str], bool],
    first: K,
    page_size: int,
) -> int:
    """The retention's pass over files: page through the candidates (keys in order, each page
    the ``page_size`` after the last one's end, from ``first``), ask ``exists`` in a worker
    thread which are gone from the disk (so a slow disk never holds the ledger), and
    ``forget`` those; return how many were forgotten."""
    forgotten, after = 0, first
    while True:
        page = await page_after(after)
        if not page:
            return forgotten
        gone = await anyio.to_thread.run_sync(_gone, page, exists)
        if gone:
            forgotten += await forget(gone)
        if len(page) < page_size:
            return forgotten
        after = page[-1]
