"""Watch source folders for new and changed files, with a rescan for the events that get lost.

File-system events are hints, not a ledger: inotify queues overflow, NFS and SMB mounts send
nothing, a folder moved in whole reports only itself. So :func:`watch` takes the candidates
``watchfiles`` reports (a created or moved-in folder is walked) and, every ``rescan_interval``
seconds, runs a full :func:`~rfbatch.localfs.scan.iter_scan` that catches whatever the events
missed. Everything it yields passed the same filters a scan applies; the manifest downstream
decides what is actually new, so the duplicates a rescan produces cost nothing.

Polling is used when ``force_polling`` is set, when ``WATCHFILES_FORCE_POLLING`` is set in the
environment, or when ``watchfiles`` detects a platform that needs it (WSL).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence

import anyio
import anyio.to_thread
import structlog
from watchfiles import Change, awatch

from rfbatch.localfs.scan import drain_in_thread, examine_path, iter_scan
from rfbatch.media import FoundFile, Skipped, SourceSpec

log = structlog.get_logger("rfbatch.watch")

Clock = Callable[[], float]

_FALSE_WORDS = frozenset({"false", "disable", "disabled", "0", "no", "off"})


def resolve_force_polling(force_polling: bool | None) -> bool | None:
    """``True`` when polling is asked for, by argument or ``WATCHFILES_FORCE_POLLING``.

    Otherwise ``None``, which lets ``watchfiles`` detect platforms that need polling.
    """
    if force_polling:
        return True
    env = os.environ.get("WATCHFILES_FORCE_POLLING", "").strip().lower()
    if env and env not in _FALSE_WORDS:
        return True
    return None


def _existing_dirs(specs: Sequence[SourceSpec]) -> list[str]:
    roots = {str(spec.root) for spec in specs if spec.root.is_dir()}
    return sorted(roots)


def _examine_changes(
    specs: Sequence[SourceSpec], paths: Sequence[str]
) -> Generator[FoundFile | Skipped, None, None]:
    for path in paths:
        for spec in specs:
            yield from examine_path(spec, path)


async def watch(
    specs: Sequence[SourceSpec],
    *,
    force_polling: bool | None = None,
    rescan_interval: float = 300.0,
    stop_event: anyio.Event | None = None,
    initial_scan: bool = True,
    poll_delay_ms: int = 300,
    debounce_ms: int = 1600,
    step_ms: int = 50,
    wake_interval: float = 1.0,
    clock: Clock = time.monotonic,
) -> AsyncGenerator[FoundFile | Skipped, None]:
    """Yield candidate files under ``specs`` until ``stop_event`` is set or the task is cancelled.

    With ``initial_scan`` the folders are scanned once as soon as the watcher is running, so
    nothing created in between is missed. ``wake_interval`` bounds how long a stop, a
    cancellation or a due rescan waits for the watcher thread. :class:`Skipped` records (files
    over ``max_size``, unreadable ones) are yielded too, so they can be recorded. A root that
    does not exist when the watch starts (an unmounted share) is covered by the rescans only.
    """
    stop = stop_event if stop_event is not None else anyio.Event()
    roots = await anyio.to_thread.run_sync(_existing_dirs, specs)
    scan_due = initial_scan
    next_rescan = clock() + rescan_interval

    async def rescan() -> AsyncGenerator[FoundFile | Skipped, None]:
        nonlocal next_rescan, scan_due
        scan_due = False
        started, seen = clock(), 0
        async with contextlib.aclosing(iter_scan(specs)) as items:
            async for item in items:
                seen += 1
                yield item
                if stop.is_set():
                    return
        next_rescan = clock() + rescan_interval
        log.info("watch.rescan", entries=seen, seconds=round(clock() - started, 3))

    if not roots:
        # Nothing to watch yet (an unmounted share, say): rescans alone report and catch up.
        while not stop.is_set():
            if scan_due or clock() >= next_rescan:
                async with contextlib.aclosing(rescan()) as items:
                    async for item in items:
                        yield item
            with anyio.move_on_after(wake_interval):
                await stop.wait()
        return

    watcher = awatch(
        *roots,
        watch_filter=None,
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop,
        rust_timeout=max(50, int(wake_interval * 1000)),
        yield_on_timeout=True,
        force_polling=resolve_force_polling(force_polling),
        poll_delay_ms=poll_delay_ms,
        recursive=True,
        ignore_permission_denied=True,
    )
    async with contextlib.aclosing(watcher):
        # awatch starts its watcher on the first step and yields (maybe an empty set) within
        # wake_interval; the initial scan runs only then, so nothing slips between the two.
        async for changes in watcher:
            if scan_due:
                async with contextlib.aclosing(rescan()) as items:
                    async for item in items:
                        yield item
            paths = sorted({path for change, path in changes if change != Change.deleted})
            if paths:
                async with contextlib.aclosing(
                    drain_in_thread(_examine_changes(specs, paths))
                ) as items:
                    async for item in items:
                        yield item
            if stop.is_set():
                return
            if clock() >= next_rescan:
                async with contextlib.aclosing(rescan()) as items:
                    async for item in items:
                        yield item
