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
from rfbatch.state.ledger import Ledger

CHUNKS_QUEUED = 2
SKIPS_QUEUED = 512


async def dry_run(ledger: Ledger, specs: Sequence[SourceSpec]) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    # The scan sends its files a chunk (a list) at a time.
    found_tx, found_rx = anyio.create_memory_object_stream[list[FoundFile]](CHUNKS_QUEUED)
    skip_tx, skip_rx = anyio.create_memory_object_stream[Skipped](SKIPS_QUEUED)

    async def collect_skips() -> None:
        async with skip_rx:
            async for item in skip_rx:
                skipped.append({"path": str(item.path), "reason": item.reason})

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(scan, specs, found_tx, skipped=skip_tx))
        tg.start_soon(collect_skips)
        async with found_rx:
            async for batch in found_rx:
                for f in await ledger.filter_new(batch):
                    files.append({"path": str(f.path), "size": f.size, "kind": f.kind})
    return {
        "count": len(files),
        "bytes": sum(int(f["size"]) for f in files),
        "files": files,
        "skipped": skipped,
    }
