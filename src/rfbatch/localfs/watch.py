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
import errno
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import structlog
from watchfiles import Change, awatch

from rfbatch.localfs.dircache import DirCache
from rfbatch.localfs.scan import chunks_in_thread, examine_path, iter_scan_chunks
from rfbatch.media import FoundFile, Skipped, SourceSpec

log = structlog.get_logger("rfbatch.watch")

Clock = Callable[[], float]

INOTIFY_LIMIT = "/proc/sys/fs/inotify/max_user_watches"
PROC_FD = "/proc/self/fd"
PROC_FDINFO = "/proc/self/fdinfo"

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


def _any_folder(paths: list[str]) -> bool:
    return any(os.path.isdir(path) for path in paths)


@dataclass
class WatchStatus:
    """How the watch sees the tree: by events, or by polling (asked for, or because the
    system would not give the watches events need). Read by the daemon's /readyz and /metrics."""

    polling: bool = False
    problem: str | None = None
    quick_rescans: int = 0
    full_rescans: int = 0


def limit_problem() -> str:
    """What to tell the operator when the system has no inotify watches left for the tree."""
    try:
        limit = Path(INOTIFY_LIMIT).read_text().strip()
    except OSError:
        limit = "unknown"
    return (
        f"out of inotify watches (fs.inotify.max_user_watches = {limit}, shared by every "
        "process of this user): new files in unwatched folders are found by quick rescans "
        "every poll interval instead; raise the limit (sysctl "
        "fs.inotify.max_user_watches=524288) or set [scan] events = false"
    )


def watch_limit_problem(exc: OSError) -> str | None:
    """What to tell the operator when ``exc`` says the system is out of inotify watches."""
    if exc.errno != errno.ENOSPC and "watch limit" not in str(exc):
        return None
    return limit_problem()


def inotify_fds() -> set[int] | None:
    """This process's inotify file descriptors, or ``None`` where ``/proc`` cannot say."""
    try:
        names = os.listdir(PROC_FD)
    except OSError:
        return None
    fds = set()
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"{PROC_FD}/{name}") == "anon_inode:inotify":
                fds.add(int(name))
    return fds


def inotify_watches(fds: Iterable[int]) -> int | None:
    """How many watches the inotify descriptors ``fds`` hold: one ``inotify wd:`` line each
    in their ``/proc`` fdinfo. ``None`` where that cannot be read."""
    total = 0
    for fd in fds:
        try:
            with open(f"{PROC_FDINFO}/{fd}", "rb") as info:
                total += info.read().count(b"inotify wd:")
        except OSError:
            return None
    return total


class WatchCount:
    """Tells when the watcher holds fewer inotify watches than there are folders.

    ``watchfiles`` (asked to pass over folders it may not read) says nothing when it runs out
    of watches, at start-up or for folders created later: so the watches its inotify
    descriptor holds are counted from ``/proc`` and compared with the folders the last walk
    reached. A shortfall is believed only when a second look, a step later, still sees it (a
    folder the walk found may not have had its watch added yet). Without ``/proc``, or when
    the watcher polls (no inotify descriptor of its own), it never tells.
    """

    def __init__(self, specs: Sequence[SourceSpec]) -> None:
        self.before = inotify_fds()
        self.fds: set[int] | None = None
        self.suspect = False
        # Folders under another spec's root are that spec's too, and one watch covers them;
        # a spec that follows symlinks reaches folders the watcher may not watch.
        roots = [spec.root for spec in specs]
        self.counted = [
            i
            for i, spec in enumerate(specs)
            if not spec.follow_symlinks
            and roots.index(spec.root) == i
            and not any(root != spec.root and spec.root.is_relative_to(root) for root in roots)
        ]

    def started(self) -> None:
        """Call once the watcher has taken its first step: its descriptor exists by then."""
        if self.fds is None and self.before is not None:
            now = inotify_fds()
            self.fds = (now - self.before) if now is not None else set()

    def short(self, caches: Sequence[DirCache]) -> int | None:
        """How many folders are unwatched, when a shortfall is confirmed (else ``None``)."""
        if not self.fds:
            return None
        watches = inotify_watches(self.fds)
        folders = sum(caches[i].folders for i in self.counted)
        missing = folders - watches if watches is not None else 0
        confirmed, self.suspect = self.suspect and missing > 0, missing > 0
        return missing if confirmed else None


async def watch(
    specs: Sequence[SourceSpec],
    *,
    force_polling: bool | None = None,
    rescan_interval: float = 300.0,
    full_rescan_interval: float = 21600.0,
    poll_interval: float = 10.0,
    stop_event: anyio.Event | None = None,
    initial_scan: bool = True,
    poll_delay_ms: int = 300,
    debounce_ms: int = 1600,
    step_ms: int = 50,
    wake_interval: float = 1.0,
    clock: Clock = time.monotonic,
    status: WatchStatus | None = None,
    events: bool = True,
    watcher: Callable[..., AsyncIterator[set[tuple[Change, str]]]] = awatch,
) -> AsyncGenerator[list[FoundFile | Skipped], None]:
    """Yield candidate files under ``specs`` until ``stop_event`` is set or the task is cancelled.

    They come in lists (chunks): a rescan's walk hands on what a worker thread found in one
    call, so a big tree costs the event loop one step per chunk, not one per file.

    With ``initial_scan`` the folders are scanned once as soon as the watcher is running, so
    nothing created in between is missed. ``wake_interval`` bounds how long a stop, a
    cancellation or a due rescan waits for the watcher thread. :class:`Skipped` records (files
    over ``max_size``, unreadable ones) are yielded too, so they can be recorded. A root that
    does not exist when the watch starts (an unmounted share) is covered by the rescans only.

    Rescans are quick (only folders whose mtime moved are listed) every ``rescan_interval``
    seconds, and full every ``full_rescan_interval``: an idle tree costs a stat per folder,
    not per file. When the system has no inotify watches left (an error from the watcher, or
    fewer watches held than folders found: see :class:`WatchCount`), the watch says so once
    (in the log and in ``status``) and goes on by quick rescans every ``poll_interval`` seconds;
    without ``events`` (a network share, whose changes raise no events) it does so from the
    start.
    """
    stop = stop_event if stop_event is not None else anyio.Event()
    state = status if status is not None else WatchStatus()
    state.polling = state.polling or not events
    roots = await anyio.to_thread.run_sync(_existing_dirs, specs)
    caches = [DirCache() for _ in specs]
    now = clock()
    due = {
        "quick": now + (poll_interval if state.polling else rescan_interval),
        "full": now if initial_scan else now + full_rescan_interval,
    }

    async def rescan(kind: str) -> AsyncGenerator[list[FoundFile | Skipped], None]:
        # Every rescan that ends makes the caches forget the folders it no longer found.
        full = kind == "full"
        started, cpu, seen = clock(), time.process_time(), 0
        listed = sum(c.listed for c in caches)
        walk = iter_scan_chunks(specs, caches=caches, quick=not full)
        async with contextlib.aclosing(walk) as chunks:
            async for chunk in chunks:
                seen += len(chunk)
                yield chunk
                if stop.is_set():
                    return
        now = clock()
        # Counted from the start of this rescan, so a slow one (a big tree) does not stretch
        # the polling interval a new file waits.
        interval = poll_interval if state.polling else rescan_interval
        due["quick"] = max(now, started + interval)
        if full:
            due["full"] = now + full_rescan_interval
            state.full_rescans += 1
        else:
            state.quick_rescans += 1
        log.info(
            "watch.rescan",
            kind=kind,
            entries=seen,
            folders_listed=sum(c.listed for c in caches) - listed,
            seconds=round(now - started, 3),
            # The whole process's CPU over the rescan: on a quiet daemon, the rescan's cost.
            cpu_seconds=round(time.process_time() - cpu, 3),
        )

    async def rescans_due() -> AsyncGenerator[list[FoundFile | Skipped], None]:
        now = clock()
        kind = "full" if now >= due["full"] else "quick" if now >= due["quick"] else None
        if kind is not None:
            async with contextlib.aclosing(rescan(kind)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def out_of_watches(problem: str, **detail: object) -> None:
        if state.problem is not None:
            return  # said once
        state.polling, state.problem = True, problem
        due["quick"] = min(due["quick"], clock() + poll_interval)
        log.warning("watch.limit", problem=problem, poll_seconds=poll_interval, **detail)

    count = (
        WatchCount(specs)
        if roots and not state.polling and not resolve_force_polling(force_polling)
        else None
    )
    checked = -1

    async def check_watches(added: list[str]) -> None:
        """After each rescan: are there folders the watcher holds no watch for? A folder
        that appeared (``added``) brings the next quick rescan, and so this check, within
        ``poll_interval``: the watcher may have had no watch left for it."""
        nonlocal checked
        if count is None or state.problem is not None:
            return
        count.started()
        if added and count.fds:
            grew: bool = await anyio.to_thread.run_sync(_any_folder, added)
            if grew:
                due["quick"] = min(due["quick"], clock() + poll_interval)
        rescans = state.quick_rescans + state.full_rescans
        if rescans == checked and not count.suspect:
            return
        checked = rescans
        missing = await anyio.to_thread.run_sync(count.short, caches)
        if missing:
            out_of_watches(limit_problem(), unwatched_folders=missing)

    if roots and not state.polling:
        try:
            async with contextlib.aclosing(
                _events(
                    specs,
                    roots,
                    watcher,
                    stop,
                    rescans_due,
                    check_watches,
                    force_polling,
                    poll_delay_ms,
                    debounce_ms,
                    step_ms,
                    wake_interval,
                )
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
        except OSError as exc:
            problem = watch_limit_problem(exc)
            if problem is None:
                raise
            out_of_watches(problem)
    # Nothing to watch (an unmounted share, say), or no watches to be had: rescans alone.
    while not stop.is_set():
        async with contextlib.aclosing(rescans_due()) as chunks:
            async for chunk in chunks:
                yield chunk
        with anyio.move_on_after(min(wake_interval, max(0.0, min(due.values()) - clock()))):
            await stop.wait()


async def _events(
    specs: Sequence[SourceSpec],
    roots: list[str],
    watcher: Callable[..., AsyncIterator[set[tuple[Change, str]]]],
    stop: anyio.Event,
    rescans_due: Callable[[], AsyncGenerator[list[FoundFile | Skipped], None]],
    check_watches: Callable[[list[str]], Awaitable[None]],
    force_polling: bool | None,
    poll_delay_ms: int,
    debounce_ms: int,
    step_ms: int,
    wake_interval: float,
) -> AsyncGenerator[list[FoundFile | Skipped], None]:
    """Candidates from file-system events, with the rescans that fall due between them."""
    changes_of = watcher(
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
    # The watcher starts on its first step and yields (maybe an empty set) within
    # wake_interval; the initial scan runs only then, so nothing slips between the two.
    async for changes in changes_of:
        async with contextlib.aclosing(rescans_due()) as chunks:
            async for chunk in chunks:
                yield chunk
        await check_watches([path for change, path in changes if change == Change.added])
        paths = sorted({path for change, path in changes if change != Change.deleted})
        if paths:
            examined = chunks_in_thread(_examine_changes(specs, paths))
            async with contextlib.aclosing(examined) as chunks:
                async for chunk in chunks:
                    yield chunk
        if stop.is_set():
            return
