"""Run :func:`rfbatch.localfs.watch.watch` over a folder and report on stdout, one JSON line
each: the log events (``watch.limit``…), every file found (``found``) and every change of the
watch's status (``status``). Stops when stdin closes. Started by
``test_localfs_watch_limit.py`` inside a user namespace with a low inotify watch limit.

Usage: python -m tests.localfs.watch_limit_child ROOT POLL_INTERVAL
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from rfbatch.localfs.watch import WatchStatus, watch
from rfbatch.media import FoundFile, SourceSpec


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(root: Path, poll_interval: float) -> None:
    status, stop = WatchStatus(), anyio.Event()

    async def report_status() -> None:
        last: dict[str, object] = {}
        while not stop.is_set():
            now = dataclasses.asdict(status)
            if now != last:
                say(event="status", **now)
                last = now
            await anyio.sleep(0.05)

    async def until_stdin_closes() -> None:
        await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(report_status)
        tg.start_soon(until_stdin_closes)
        async for chunk in watch(
            [SourceSpec(root)],
            status=status,
            stop_event=stop,
            poll_interval=poll_interval,
            # Rescans too rare to find anything within a test: what is found comes by
            # events, or by the polling the watch limit brings.
            rescan_interval=3600,
            full_rescan_interval=3600,
            debounce_ms=50,
            step_ms=10,
            wake_interval=0.1,
        ):
            for item in chunk:
                if isinstance(item, FoundFile):
                    say(event="found", rel=item.rel)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    anyio.run(main, Path(sys.argv[1]), float(sys.argv[2]))
