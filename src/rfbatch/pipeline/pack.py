"""Group assigned images into shards: one batch per shard, at most ``max_files`` images and
``max_bytes`` of data each.

A shard is only a list of files here; member names, the tar and the manifest rows are made by the
upload stage, just before the PUT, so a shard that waits in the queue holds no resources. In the
daemon, files trickle in: ``linger`` sends a partial shard at most that long after its first
image came. (Counted from the last image instead, a camera's steady trickle would hold a shard
open until it was full: hundreds of seconds for the first file of it.)

Files come one at a time; waiting for each one alone (a wake-up per file, for a packer that has
almost nothing to do with it) cost more than packing it. When the input runs dry the packer
lets files gather for :data:`GATHER_SECONDS` once, then takes what came in one go, and waits
for the next file only if none did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.media import FoundFile
from rfbatch.pipeline.batches import Assigned

# How long the packer lets files gather when its input runs dry: short beside a shard's PUT.
GATHER_SECONDS = 0.002


@dataclass
class Shard:
    batch_id: str
    files: list[FoundFile] = field(default_factory=list)
    size: int = 0

    def add(self, file: FoundFile) -> None:
        self.files.append(file)
        self.size += file.size


async def pack_shards(
    receive: MemoryObjectReceiveStream[Assigned],
    send: MemoryObjectSendStream[Shard],
    *,
    max_files: int,
    max_bytes: int,
    linger: float | None = None,
) -> None:
    """Read images until the input closes, emitting a shard whenever one is full, or (with
    ``linger``) that many seconds after its first image."""
    shard: Shard | None = None
    due = 0.0  # when the open shard goes, full or not
    async with receive, send:
        while True:
            item: Assigned | None = None
            try:
                if shard is not None and linger is not None:
                    with anyio.move_on_after(max(0.0, due - anyio.current_time())):
                        item = await _next(receive)
                else:
                    item = await _next(receive)
            except anyio.EndOfStream:
                break
            if item is None:  # lingered long enough: send what we have
                assert shard is not None
                await send.send(shard)
                shard = None
                continue
            # A file alone over the byte cap still gets a shard of its own rather than none.
            if shard is not None and (
                shard.batch_id != item.batch_id
                or len(shard.files) >= max_files
                or shard.size + item.file.size > max_bytes
            ):
                await send.send(shard)
                shard = None
            if shard is None:
                shard = Shard(item.batch_id)
                due = anyio.current_time() + (linger or 0.0)
            shard.add(item.file)
        if shard is not None:
            await send.send(shard)


async def _next(receive: MemoryObjectReceiveStream[Assigned]) -> Assigned:
    """The next file: at once if one is waiting, else after files could gather for a moment,
    else whenever one comes. Raises :class:`anyio.EndOfStream` at the end of the input."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        pass
    await anyio.sleep(GATHER_SECONDS)
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        return await receive.receive()
