"""Packing images into shards: full shards go at once, a trickle's shards go after ``linger``."""

from __future__ import annotations

from pathlib import Path

import anyio

from rfbatch.media import FoundFile
from rfbatch.pipeline.batches import Assigned
from rfbatch.pipeline.pack import Shard, pack_shards


def image(n: int) -> Assigned:
    found = FoundFile(f"/src/{n}.jpg", Path("/src"), f"{n}.jpg", 100, 0, n, "image")
    return Assigned("cams", found)


async def test_a_steady_trickle_does_not_hold_a_shard_open_until_it_is_full() -> None:
    # A file every 50 ms never leaves a 300 ms gap; each shard still goes 300 ms after its first.
    send, receive = anyio.create_memory_object_stream[Assigned](100)
    out_send, out_receive = anyio.create_memory_object_stream[Shard](100)
    emitted_while_feeding: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: pack_shards(receive, out_send, max_files=500, max_bytes=10**9, linger=0.3)
        )
        async with send:
            for n in range(40):
                await send.send(image(n))
                await anyio.sleep(0.05)
            emitted_while_feeding.append(out_receive.statistics().current_buffer_used)
        shards = [shard async for shard in out_receive]
    assert emitted_while_feeding[0] >= 3  # 2 s of trickle: several shards went meanwhile
    assert sum(len(s.files) for s in shards) == 40
    assert max(len(s.files) for s in shards) < 40


async def test_full_shards_go_at_once_and_the_rest_when_the_input_ends() -> None:
    send, receive = anyio.create_memory_object_stream[Assigned](100)
    out_send, out_receive = anyio.create_memory_object_stream[Shard](100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: pack_shards(receive, out_send, max_files=4, max_bytes=10**9))
        async with send:
            for n in range(10):
                await send.send(image(n))
        shards = [shard async for shard in out_receive]
    assert [len(s.files) for s in shards] == [4, 4, 2]
