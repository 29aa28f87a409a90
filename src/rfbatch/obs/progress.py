"""Rich progress displays for one-shot commands on a terminal, refreshed from a snapshot.

A display polls a snapshot callable a few times a second instead of being called from every
stage or byte callback, so the work stays free of display code, never waits on the terminal,
and a run whose stderr is not a terminal pays nothing.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import anyio
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from rfbatch.obs.tally import Tally

REFRESH_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a display; rows are matched across refreshes by ``key``.

    ``total=None`` leaves the total as it was (unknown until a row first sets one), and
    ``detail`` is what a column reading ``{task.fields[detail]}`` shows.
    """

    key: str
    description: str
    completed: float = 0.0
    total: float | None = None
    detail: str = ""
    unit: str = ""  # "bytes": the size and speed columns apply (see :class:`ForBytes`)


@asynccontextmanager
async def live_rows(
    snapshot: Callable[[], Sequence[Row]],
    columns: Sequence[ProgressColumn],
    *,
    enabled: bool,
) -> AsyncIterator[bool]:
    """Show ``snapshot()`` on stderr while the block runs, and once more as it ends.

    Nothing is shown unless ``enabled`` and stderr is a terminal; the block is told which (so a
    caller can skip feeding a snapshot nobody reads). Rows the snapshot no longer returns are
    removed.
    """
    if not (enabled and sys.stderr.isatty()):
        yield False
        return
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        shown: dict[str, TaskID] = {}

        def refresh() -> None:
            rows = snapshot()
            keys = {row.key for row in rows}
            for gone in [key for key in shown if key not in keys]:
                bar.remove_task(shown.pop(gone))
            for row in rows:
                task = shown.get(row.key)
                if task is None:
                    # Every field a column reads is set from the start: the display redraws
                    # from its own thread and may do so before the update below.
                    task = shown[row.key] = bar.add_task(
                        row.description, total=row.total, detail=row.detail, unit=row.unit
                    )
                bar.update(
                    task,
                    description=row.description,
                    completed=row.completed,
                    total=row.total,
                    detail=row.detail,
                    unit=row.unit,
                )

        async with anyio.create_task_group() as tg:

            async def poll() -> None:
                while True:
                    refresh()
                    await anyio.sleep(REFRESH_SECONDS)

            tg.start_soon(poll)
            try:
                yield True
            finally:
                tg.cancel_scope.cancel()
        refresh()


def upload_progress(tally: Tally, *, enabled: bool) -> AbstractAsyncContextManager[bool]:
    """A bar of files and bytes sent, fed from ``tally``; rows for the files waiting to settle
    and, once everything is sent, for the files the service has confirmed."""
    return live_rows(lambda: upload_rows(tally), UPLOAD_COLUMNS, enabled=enabled)


def upload_rows(tally: Tally) -> list[Row]:
    """What the upload display shows now."""
    # Totals grow while the scan runs; the ETA is honest once the scan is done. Bytes count as
    # they go out (the wire's count, a little over the files' for tar headers), so a shard of
    # hundreds of files moves the bar while it is sent, not only when it is done.
    total = max(tally.queued_bytes, tally.sent_bytes)
    rows = [
        Row(
            "upload",
            f"upload {tally.sent}/{max(tally.queued, tally.sent)} files",
            completed=max(tally.sent_bytes, min(tally.wire_bytes, total)),
            total=total or None,
            unit="bytes",
        )
    ]
    settling = tally.settling()
    if settling:
        rows.append(Row("settle", f"settle {settling} files waiting to be quiet", total=0))
    if tally.phase == "confirm":
        for batch_id, (count, expected) in tally.ingest.items():
            rows.append(
                Row(
                    f"confirm {batch_id}",
                    f"confirm {batch_id}: {count}/{expected} files ingested",
                    completed=count,
                    total=max(expected, 1),
                )
            )
    return rows


class ForBytes(ProgressColumn):
    """``inner`` on rows that count bytes; nothing on the others (files, counts)."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self.inner = inner

    def render(self, task: Task) -> RenderableType:
        return self.inner.render(task) if task.fields.get("unit") == "bytes" else Text("")


UPLOAD_COLUMNS: tuple[ProgressColumn, ...] = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    ForBytes(DownloadColumn()),
    ForBytes(TransferSpeedColumn()),
    ForBytes(TimeRemainingColumn()),
)
