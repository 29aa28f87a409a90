from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from rfbatch.errors import ConfigError
from rfbatch.localfs.scan import examine_path
from rfbatch.localfs.settle import Settler, restat, settle_files
from rfbatch.media import FoundFile, SourceSpec
from tests.localfs.support import MakeFile
from tests.waiting import wait_for

SETTLE = 5.0
POLL = 0.005


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def found(path: Path) -> FoundFile:
    [item] = examine_path(SourceSpec(path.parent), path)
    assert isinstance(item, FoundFile)
    return item


def test_old_file_is_ready_at_first_sight(make_file: MakeFile) -> None:
    settler = Settler(SETTLE, clock=FakeClock())
    f = found(make_file("old.jpg"))
    assert settler.observe(f) == f
    assert settler.pending == 0
    assert settler.statistics().settled_at_once == 1


def test_fresh_file_waits_for_quiet_period(make_file: MakeFile) -> None:
    clock = FakeClock()
    settler = Settler(SETTLE, clock=clock)
    path = make_file("fresh.jpg", b"ab", mtime=None)
    f = found(path)
    assert settler.observe(f) is None
    assert settler.apply(restat(settler.pending_paths())) == []
    clock.now += SETTLE - 0.1
    assert settler.apply(restat(settler.pending_paths())) == []
    # Still writing: the timer restarts from the moment the change was seen.
    with path.open("ab") as fh:
        fh.write(b"cd")
    os.utime(path, ns=(f.mtime_ns + 1, f.mtime_ns + 1))
    assert settler.apply(restat(settler.pending_paths())) == []
    clock.now += SETTLE - 0.1
    assert settler.apply(restat(settler.pending_paths())) == []
    clock.now += 0.2
    [ready] = settler.apply(restat(settler.pending_paths()))
    assert (ready.path, ready.size, ready.mtime_ns) == (path, 4, f.mtime_ns + 1)
    assert settler.pending == 0


def test_vanished_file_is_dropped(make_file: MakeFile) -> None:
    settler = Settler(SETTLE, clock=FakeClock())
    path = make_file("gone.jpg", mtime=None)
    settler.observe(found(path))
    path.unlink()
    assert settler.apply(restat(settler.pending_paths())) == []
    assert settler.pending == 0
    assert settler.statistics().vanished == 1


def test_resighting_keeps_or_restarts_the_timer(make_file: MakeFile) -> None:
    clock = FakeClock()
    settler = Settler(SETTLE, clock=clock)
    path = make_file("a.jpg", b"1", mtime=None)
    f = found(path)
    assert settler.observe(f) is None
    clock.now += SETTLE
    # The same version seen again (a rescan) after the quiet period is ready.
    assert settler.observe(f) == f
    # Once passed on it is forgotten: a later sighting of a still-fresh file waits again.
    assert settler.observe(f) is None
    settler2 = Settler(SETTLE, clock=clock)
    settler2.observe(f)
    clock.now += SETTLE
    moved = FoundFile(f.location, f.root, f.rel, f.size + 1, f.mtime_ns, f.inode, f.kind)
    assert settler2.observe(moved) is None


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError):
        Settler(-1)
    with pytest.raises(ConfigError):
        Settler(1, max_pending=0)


async def run_stage(
    settler: Settler,
    body: Callable[[anyio.abc.ObjectSendStream[FoundFile], list[FoundFile]], Awaitable[None]],
    *,
    in_buffer: int = 0,
) -> list[FoundFile]:
    in_tx, in_rx = anyio.create_memory_object_stream[FoundFile](in_buffer)
    out_tx, out_rx = anyio.create_memory_object_stream[FoundFile](100)
    out: list[FoundFile] = []

    async def drain() -> None:
        async with out_rx:
            async for item in out_rx:
                out.append(item)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            tg.start_soon(lambda: settle_files(in_rx, out_tx, settler, poll_interval=POLL))
            await body(in_tx, out)
    return out


async def test_stage_passes_old_files_at_once_and_waits_for_fresh(make_file: MakeFile) -> None:
    clock = FakeClock()
    settler = Settler(SETTLE, clock=clock)
    old = found(make_file("old.jpg"))
    fresh = found(make_file("fresh.jpg", mtime=None))

    async def body(tx: anyio.abc.ObjectSendStream[FoundFile], out: list[FoundFile]) -> None:
        async with tx:
            await tx.send(old)
            await tx.send(fresh)
            await wait_for(lambda: out == [old], "out == [old]")
            rounds = settler.statistics().restat_rounds
            await wait_for(
                lambda: settler.statistics().restat_rounds >= rounds + 3,
                "settler.statistics().restat_rounds >= rounds + 3",
            )
            assert out == [old]
            clock.now += SETTLE
            await wait_for(lambda: len(out) == 2, "len(out) == 2")

    out = await run_stage(settler, body)
    assert out == [old, fresh]


async def test_stage_ends_when_input_closes_and_nothing_pends(make_file: MakeFile) -> None:
    clock = FakeClock()
    settler = Settler(SETTLE, clock=clock)
    files = [found(make_file(f"f{i}.jpg", mtime=None)) for i in range(3)]
    doomed = files[2].path

    async def body(tx: anyio.abc.ObjectSendStream[FoundFile], out: list[FoundFile]) -> None:
        async with tx:
            for f in files:
                await tx.send(f)
        await wait_for(lambda: settler.pending == 3, "settler.pending == 3")
        doomed.unlink()
        clock.now += SETTLE

    out = await run_stage(settler, body)
    assert sorted(f.path.name for f in out) == ["f0.jpg", "f1.jpg"]
    assert settler.statistics().vanished == 1


async def test_stage_backpressure_bounds_pending(make_file: MakeFile) -> None:
    clock = FakeClock()
    settler = Settler(SETTLE, clock=clock, max_pending=2)
    files = [found(make_file(f"f{i}.jpg", mtime=None)) for i in range(5)]
    sent: list[int] = []

    async def body(tx: anyio.abc.ObjectSendStream[FoundFile], out: list[FoundFile]) -> None:
        async def produce() -> None:
            async with tx:
                for i, f in enumerate(files):
                    await tx.send(f)
                    sent.append(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await wait_for(lambda: settler.pending == 2, "settler.pending == 2")
            rounds = settler.statistics().restat_rounds
            await wait_for(
                lambda: settler.statistics().restat_rounds >= rounds + 3,
                "settler.statistics().restat_rounds >= rounds + 3",
            )
            # Two pending, the third taken from the stream and held, the producer blocked.
            assert settler.pending == 2
            assert len(sent) == 3
            while len(out) < 5:
                assert settler.pending <= 2
                clock.now += SETTLE
                await anyio.sleep(0.002)

    out = await run_stage(settler, body)
    assert sorted(f.path.name for f in out) == [f"f{i}.jpg" for i in range(5)]


async def test_stage_with_real_clock_and_zero_settle(make_file: MakeFile) -> None:
    settler = Settler(0)
    future = time.time() + 3600
    f = found(make_file("future.jpg", mtime=future))

    async def body(tx: anyio.abc.ObjectSendStream[FoundFile], out: list[FoundFile]) -> None:
        async with tx:
            await tx.send(f)

    assert await run_stage(settler, body) == [f]
