"""The real watcher out of inotify watches: it says so once, and new files in the folders it
could not watch are found by polling.

The limit is lowered inside a user namespace (``unshare -Ur``), whose own
``/proc/sys/user/max_inotify_watches`` is set to 64; the host's setting is untouched. Where
user namespaces cannot be had, these tests fail, with unshare's own words.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from rfbatch.localfs.watch import WatchStatus
from rfbatch.media import SourceSpec
from tests.localfs.test_localfs_watch import publish, watching
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64
POLL_SECONDS = 1.0


class Child:
    """The watch running in its namespace, and what it reported so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line["event"] == name]

    def found(self) -> set[str]:
        return {line["rel"] for line in self.events("found")}

    def status(self) -> dict[str, Any]:
        statuses = self.events("status")
        return statuses[-1] if statuses else {}

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        assert self.proc.stderr is not None
        raise AssertionError(
            f"the watch in its user namespace exited with {self.proc.returncode} "
            f"(are user namespaces available? unshare -Ur): {self.proc.stderr.read()}"
        )

    async def wait(self, probe: Any, what: str) -> Any:
        return await wait_for(lambda: self.alive() and probe(), what, timeout=90)


@contextmanager
def watch_with_few_watches(root: Path) -> Iterator[Child]:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to lower the inotify watch limit"
    command = (
        f"echo {LIMIT} > /proc/sys/user/max_inotify_watches && "
        f'exec "$0" -m tests.localfs.watch_limit_child "$1" {POLL_SECONDS}'
    )
    proc = subprocess.Popen(
        [unshare, "-Ur", "sh", "-c", command, sys.executable, str(root)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Child(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def folders(root: Path, cameras: range, days: int) -> list[Path]:
    made = [root / f"cam{c}" / f"day{d}" for c in cameras for d in range(days)]
    for folder in made:
        folder.mkdir(parents=True)
    return made


def limit_warned_once(child: Child) -> None:
    (warning,) = child.events("watch.limit")
    assert "fs.inotify.max_user_watches" in warning["problem"]
    assert "[scan] events = false" in warning["problem"]
    assert warning["unwatched_folders"] > 0
    status = child.status()
    assert status["polling"] is True
    assert status["problem"] == warning["problem"]


async def test_more_folders_than_watches_at_start_up(tmp_path: Path) -> None:
    root = tmp_path / "src"
    days = folders(root, range(10), days=20)  # with the cameras and the root: 211 folders
    with watch_with_few_watches(root) as child:
        await child.wait(lambda: child.events("watch.limit"), "the watch.limit warning")
        await child.wait(lambda: child.status().get("polling"), "the status to say polling")
        # Most of these folders have no watch: only polling can find what arrives in them.
        for day in days:
            publish(day / "late.jpg")
        publish(root / "cam10" / "day0" / "new.jpg")
        expected = {f"{d.parent.name}/{d.name}/late.jpg" for d in days} | {"cam10/day0/new.jpg"}
        await child.wait(lambda: expected <= child.found(), "the new files, by polling")
        quick = child.status()["quick_rescans"]
        await child.wait(lambda: child.status()["quick_rescans"] >= quick + 2, "more polls")
        limit_warned_once(child)


async def test_folders_added_past_the_limit_later(tmp_path: Path) -> None:
    root = tmp_path / "src"
    folders(root, range(1), days=28)  # with cam0 and the root: 30 folders, all watched
    with watch_with_few_watches(root) as child:
        await child.wait(lambda: child.status().get("full_rescans"), "the initial scan")
        publish(root / "cam0" / "day0" / "first.jpg")
        await child.wait(lambda: "cam0/day0/first.jpg" in child.found(), "a file, by events")
        assert child.events("watch.limit") == []
        assert child.status()["polling"] is False

        late = folders(root, range(1, 2), days=100)  # cam1/day0..day99
        await child.wait(lambda: child.events("watch.limit"), "the watch.limit warning")
        for day in late:
            publish(day / "late.jpg")
        expected = {f"cam1/{d.name}/late.jpg" for d in late}
        await child.wait(lambda: expected <= child.found(), "the new files, by polling")
        quick = child.status()["quick_rescans"]
        await child.wait(lambda: child.status()["quick_rescans"] >= quick + 2, "more polls")
        limit_warned_once(child)


async def test_with_watches_enough_folders_come_and_go_without_a_false_alarm(
    tmp_path: Path,
) -> None:
    """The count runs after every rescan, here many times a second, while folders are made
    and deleted: with watches to spare it never takes a shortfall for the limit."""
    root = tmp_path / "src"
    days = folders(root, range(3), days=5)
    status = WatchStatus()
    with capture_logs() as logs:
        async with watching(
            [SourceSpec(root)], status=status, rescan_interval=0.05, poll_interval=0.05
        ) as w:
            await wait_for(lambda: status.full_rescans, "the initial scan")
            for day in days[:5]:
                shutil.rmtree(day)
            late = folders(root, range(3, 6), days=5)
            for day in late:
                publish(day / "late.jpg")
            await wait_for(lambda: len(w.rels()) == len(late), "the new files")
            quick = status.quick_rescans
            await wait_for(lambda: status.quick_rescans >= quick + 10, "more rescans")
    assert [e for e in logs if e["event"] == "watch.limit"] == []
    assert (status.polling, status.problem) == (False, None)
