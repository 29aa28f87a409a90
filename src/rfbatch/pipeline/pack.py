"""Group settled images into shards: at most ``max_files`` images and ``max_bytes`` of data each.

A shard is only a list of files here; member names, the tar and the manifest rows are made by the
upload stage, just before the PUT, so a shard that waits in the queue holds no resources.
"""

from __future__ import annotations

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.localfs.scan import FoundFile


async def pack_shards(
    receive: MemoryObjectReceiveStream[FoundFile],
    send: MemoryObjectSendStream[list[FoundFile]],
    *,
    max_files: int,
    max_bytes: int,
) -> None:
    """Read images until the input closes, emitting a shard whenever one is full."""
    shard: list[FoundFile] = []
    size = 0
    async with receive, send:
        async for file in receive:
            # A file alone over the byte cap still gets a shard of its own rather than no shard.
            if shard and (len(shard) >= max_files or size + file.size > max_bytes):
                await send.send(shard)
                shard, size = [], 0
            shard.append(file)
            size += file.size
        if shard:
            await send.send(shard)
