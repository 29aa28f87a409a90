"""Decide when a file is quiet enough to send.

A watch event or a scan hit means "this file exists", not "this file is complete": a camera or a
copy may still be writing it. A file is *settled* once its size and mtime have stayed the same,
re-statted over monotonic time, for ``settle_seconds``. A file whose mtime is already older than
``settle_seconds`` by the wall clock the first time it is seen is settled at once, so a one-shot
scan of an old folder never waits.

:class:`Settler` holds the bookkeeping and never blocks; :func:`settle_files` is the pipeline
stage around it: it reads candidates from one stream, re-stats the pending ones in a worker
thread every ``poll_interval`` seconds, and writes settled files to the next stream.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rfbatch.errors import ConfigError
from rfbatch.media import FoundFile

Clock = Callable[[], float]
StatResult = tuple[Path, os.stat_result | None]


@dataclass
class SettleStats:
    """A snapshot of a :class:`Settler`'s counters."""

    pending: int = 0
    observed: int = 0
    settled_at_once: int = 0
    settled_after_wait: int = 0
    vanished: int = 0
    restat_rounds: int = 0


@dataclass
class _Pending:
    file: FoundFile
    quiet_since: float


class Settler:
    """Tracks files that are not yet quiet.

    ``clock`` is monotonic time (the settle timer), ``wall_clock`` is the wall time compared
    with mtimes for the "already old" shortcut; both can be replaced in tests. ``max_pending``
    bounds the set of files being watched: :attr:`full` tells a producer to wait.
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        max_pending: int = 10_000,
        on_vanished: Callable[[Path], None] | None = None,
    ) -> None:
        if settle_seconds < 0:
            raise ConfigError(f"settle_seconds must be >= 0, got {settle_seconds}")
        if max_pending < 1:
            raise ConfigError(f"max_pending must be >= 1, got {max_pending}")
        self._on_vanished = on_vanished
        self.settle_seconds = settle_seconds
        self.max_pending = max_pending
        self._clock = clock
        self._wall_clock = wall_clock
        self._pending: dict[Path, _Pending] = {}
        self._stats = SettleStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_pending

    def statistics(self) -> SettleStats:
        return dataclasses.replace(self._stats, pending=len(self._pending))

    def observe(self, file: FoundFile) -> FoundFile | None:
        """Take one sighting of ``file``; return it if it is settled now, else keep it pending.

        A file already pending keeps its timer when size and mtime are unchanged, and restarts
        it when they moved.
        """
        self._stats.observed += 1
        known = self._pending.get(file.path)
        now = self._clock()
        if known is None:
            age = self._wall_clock() - file.mtime_ns / 1e9
            if age >= self.settle_seconds:
                self._stats.settled_at_once += 1
                return file
            self._pending[file.path] = _Pending(file, now)
            return None
        if _same_version(known.file, file.size, file.mtime_ns):
            known.file = file
            return self._ready_or_none(file.path, known, now)
        self._pending[file.path] = _Pending(file, now)
        return None

    def pending_paths(self) -> list[Path]:
        """The paths to re-stat next (a snapshot: the set may change while they are statted)."""
        return list(self._pending)

    def apply(self, results: Iterable[StatResult]) -> list[FoundFile]:
        """Feed fresh stats of pending files; return those now settled (no longer pending).

        A result of ``None`` means the file vanished (or is no longer a regular file): it is
        dropped. A path that is no longer pending is ignored.
        """
        self._stats.restat_rounds += 1
        now = self._clock()
        ready: list[FoundFile] = []
        for path, st in results:
            known = self._pending.get(path)
            if known is None:
                continue
            if st is None:
                del self._pending[path]
                self._stats.vanished += 1
                if self._on_vanished is not None:
                    self._on_vanished(path)
                continue
            if not _same_version(known.file, st.st_size, st.st_mtime_ns):
                known.file = dataclasses.replace(
                    known.file, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino
                )
                known.quiet_since = now
                continue
            done = self._ready_or_none(path, known, now)
            if done is not None:
                ready.append(done)
        return ready

    def _ready_or_none(self, path: Path, known: _Pending, now: float) -> FoundFile | None:
        if now - known.quiet_since < self.settle_seconds:
            return None
        del self._pending[path]
        self._stats.settled_after_wait += 1
        return known.file


def _same_version(file: FoundFile, size: int, mtime_ns: int) -> bool:
    return file.size == size and file.mtime_ns == mtime_ns


def restat(paths: Sequence[Path]) -> list[StatResult]:
    """Stat each path; ``None`` for one that vanished or is not a regular file. Blocking."""
    out: list[StatResult] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, None))
            continue
        out.append((path, st if stat.S_ISREG(st.st_mode) else None))
    return out


async def settle_files(
    receive: MemoryObjectReceiveStream[FoundFile],
    send: MemoryObjectSendStream[FoundFile],
    settler: Settler,
    *,
    poll_interval: float = 1.0,
) -> SettleStats:
    """Pass files from ``receive`` to ``send`` once each has settled; close both at the end.

    Ends when ``receive`` is closed and no file is pending any more. While ``max_pending``
    files are pending the stage stops reading its input, so the producer blocks.
    """
    input_done = anyio.Event()
    room = anyio.Event()

    async def read_input() -> None:
        nonlocal room
        async with receive:
            async for file in receive:
                while settler.full:
                    room = anyio.Event()
                    await room.wait()
                ready = settler.observe(file)
                if ready is not None:
                    await send.send(ready)
        input_done.set()

    async with send, anyio.create_task_group() as tg:
        tg.start_soon(read_input)
        while True:
            # Wake early when the input ends, so a finite run does not wait a poll for nothing.
            with anyio.move_on_after(poll_interval):
                await input_done.wait()
            paths = settler.pending_paths()
            if paths:
                results = await anyio.to_thread.run_sync(restat, paths)
                for file in settler.apply(results):
                    await send.send(file)
                room.set()
            if input_done.is_set() and settler.pending == 0:
                break
            if input_done.is_set():
                # Input is over but files are still settling: poll at the normal pace.
                await anyio.sleep(poll_interval)
    return settler.statistics()
