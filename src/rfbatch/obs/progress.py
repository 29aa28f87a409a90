"""A rich progress bar for one-shot commands on a terminal, fed from a :class:`Tally`.

The bar polls the tally a few times a second instead of being called from every stage, so the
stages stay free of display code and a non-TTY run pays nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rfbatch.obs.tally import Tally


@asynccontextmanager
async def upload_progress(tally: Tally, *, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("scanning", total=None)

        def refresh() -> None:
            # Totals grow while the scan runs; the ETA is honest once the scan is done.
            bar.update(
                task,
                description=f"{tally.sent}/{max(tally.queued, tally.sent)} files",
                completed=tally.sent_bytes,
                total=max(tally.queued_bytes, tally.sent_bytes) or None,
            )

        async with anyio.create_task_group() as tg:

            async def poll() -> None:
                while True:
                    refresh()
                    await anyio.sleep(0.25)

            tg.start_soon(poll)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        refresh()
