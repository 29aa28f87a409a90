"""``--dry-run``: what a pass would send, with sizes; nothing is sent, nothing waits to settle.

It needs the ledger (to leave out what was sent before) but no API: no key, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio

from rfbatch.localfs.scan import scan
from rfbatch.media import FoundFile, Skipped, SourceSpec
from rfbatch.pipeline.discover import SELECT_BATCH, next_batch
from rfbatch.state.ledger import Ledger


async def dry_run(ledger: Ledger, specs: Sequence[SourceSpec]) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    found_tx, found_rx = anyio.create_memory_object_stream[FoundFile](SELECT_BATCH)
    skip_tx, skip_rx = anyio.create_memory_object_stream[Skipped](SELECT_BATCH)

    async def collect_skips() -> None:
        async with skip_rx:
            async for item in skip_rx:
                skipped.append({"path": str(item.path), "reason": item.reason})

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(scan, specs, found_tx, skipped=skip_tx))
        tg.start_soon(collect_skips)
        async with found_rx:
            while batch := await next_batch(found_rx, SELECT_BATCH):
                for f in await ledger.filter_new(batch):
                    files.append({"path": str(f.path), "size": f.size, "kind": f.kind})
    return {
        "count": len(files),
        "bytes": sum(int(f["size"]) for f in files),
        "files": files,
        "skipped": skipped,
    }
