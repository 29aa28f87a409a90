"""A daemon watching a big, quiet tree: its idle CPU, and how soon a new file is taken.

    .venv/bin/python benchmarks/idle.py --files 200000 [--idle-minutes 10] [--latency-files 40]

Builds (once) a camera-shaped tree under ``benchmarks/data/tree-<files>`` (100 cameras, a folder
per day, 100 small images a day), then for each watch mode, events (inotify) and polling
(``[scan] events = false``, quick rescans every ``poll_interval_seconds``):

1. runs ``rfbatch run`` over it against a separate-process emulator (digests mode) until every
   file is uploaded (the first mode only; the second reuses the manifest, so nothing is sent
   twice), then measures the daemon's CPU (user + system, all threads) over ``--idle-minutes``
   of a quiet tree: its idle cost, as a share of one core;
2. drops ``--latency-files`` new images into existing day folders, one a second (a temporary
   name, then a rename, as a camera does), and reads the daemon's manifest (read-only) for when
   each was picked up (recorded) and when its upload started (packed into a shard): median and
   99th percentile from its arrival.

Also prints what one rescan costs in this process (CPU of a full walk, and of a quick walk over
an unchanged tree) and the average those give at the default intervals. Everything talks to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.emu import Emulator
from harness.proctree import process_cpu_s
from run import compile_rfbatch, rfbatch_command

from rfbatch.localfs.dircache import DirCache
from rfbatch.localfs.scan import iter_scan
from rfbatch.media import SourceSpec

HERE = Path(__file__).resolve().parent
KEY = "rf-bench-idle-key"
CAMERAS, PER_DAY = 100, 100
DEFAULTS = {"rescan": 300.0, "full": 21600.0, "poll": 10.0}
# One image: a JPEG start, then filler. The emulator in digests mode checks no content.
IMAGE = b"\xff\xd8\xff\xe0" + b"\0" * 60


def build_tree(files: int) -> Path:
    root = HERE / "data" / f"tree-{files}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    days = max(1, files // (CAMERAS * PER_DAY))
    old = time.time() - 86400
    for cam in range(CAMERAS):
        for day in range(days):
            folder = root / f"cam{cam:03d}" / f"day{day:04d}"
            folder.mkdir(parents=True)
            for i in range(PER_DAY):
                (folder / f"img{i:03d}.jpg").write_bytes(IMAGE)
            os.utime(folder, (old, old))
    done.write_text("")
    return root


async def rescan_costs(root: Path) -> tuple[float, float, int]:
    """CPU seconds of a full walk, of a quick walk of the unchanged tree, and the files seen."""
    spec = SourceSpec(root)
    caches = [DirCache()]
    started = time.process_time()
    files = sum([1 async for _ in iter_scan([spec], caches=caches)])
    full = time.process_time() - started
    started = time.process_time()
    async for _ in iter_scan([spec], caches=caches, quick=True):
        pass
    return full, time.process_time() - started, files


def write_config(path: Path, emu: Emulator, root: Path, state: Path, *, events: bool) -> None:
    path.write_text(
        "\n".join(
            [
                "[api]",
                f'base_url = "{emu.url}"',
                "[scan]",
                f"events = {json.dumps(events)}",
                "[daemon]",
                f"sources = [{json.dumps(str(root))}]",
                'http_listen = "127.0.0.1:0"',
                "min_free_bytes = 0",
                "[state]",
                f"dir = {json.dumps(str(state))}",
                "[log]",
                'format = "json"',
            ]
        )
        + "\n"
    )


class Daemon:
    def __init__(self, config: Path, emu: Emulator, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RFBATCH_")}
        env.update(emu.env())
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [*rfbatch_command(), "run", "-c", str(config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                if '"http.listening"' in line:
                    return str(json.loads(line)["url"])
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the daemon did not start; see {self.log}")

    def metric(self, series: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as resp:  # noqa: S310
            for line in resp.read().decode().splitlines():
                key, _, value = line.rpartition(" ")
                if key == series:
                    return float(value)
        return 0.0

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_uploaded(daemon: Daemon, files: int, timeout: float) -> float:
    started = time.monotonic()
    while daemon.metric('rfbatch_files_total{outcome="uploaded"}') < files:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not every file was uploaded within {timeout:.0f} s")
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited; see {daemon.log}")
        time.sleep(1.0)
    return time.monotonic() - started


def latencies(root: Path, state: Path, count: int) -> tuple[list[float], list[float]]:
    """Seconds from each new file's arrival to its being recorded, and to its upload start."""
    rng = random.Random(7)
    days = sorted(p for p in root.glob("cam*/day*") if p.is_dir())
    arrived: dict[str, float] = {}
    seen: dict[str, float] = {}
    started: dict[str, float] = {}
    db = sqlite3.connect(f"file:{state / 'manifest.sqlite3'}?mode=ro", uri=True, timeout=30)
    next_drop = time.monotonic()
    deadline = time.monotonic() + count + 600
    while len(started) < count and time.monotonic() < deadline:
        now = time.monotonic()
        if len(arrived) < count and now >= next_drop:
            folder = rng.choice(days)
            path = folder / f"new-{len(arrived):04d}-{int(time.time())}.jpg"
            part = path.with_name(path.name + ".part")
            part.write_bytes(IMAGE + os.urandom(8))
            os.replace(part, path)
            arrived[str(path)] = time.monotonic()
            next_drop = now + 1.0
        pending = [p for p in arrived if p not in started]
        if pending:
            marks = ",".join("?" * len(pending))
            rows = db.execute(
                f"SELECT path, state FROM files WHERE path IN ({marks})",  # noqa: S608
                pending,
            ).fetchall()
            now = time.monotonic()
            for path, file_state in rows:
                seen.setdefault(path, now)
                if file_state in ("packed", "uploading", "uploaded", "ingested"):
                    started.setdefault(path, now)
        time.sleep(0.05)
    db.close()
    return (
        [seen[p] - arrived[p] for p in seen],
        [started[p] - arrived[p] for p in started],
    )


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.2f} s, p99 {p99:.2f} s (n={len(ordered)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--latency-files", type=int, default=40)
    args = parser.parse_args(argv)
    compile_rfbatch()
    started = time.monotonic()
    root = build_tree(args.files)
    print(f"tree: {args.files} files in {root} ({time.monotonic() - started:.0f} s to build)")
    full, quick, found = anyio.run(rescan_costs, root)
    average = quick / DEFAULTS["rescan"] + full / DEFAULTS["full"]
    print(
        f"one rescan here: full {full:.2f} CPU-s ({found} files), quick {quick:.3f} CPU-s; "
        f"at the default intervals {100 * average:.2f} % of a core"
    )
    work = HERE / "data" / "idle-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    state = work / "state"
    code = 0
    with Emulator(sys.executable, work / "emulator", work / "logs", KEY) as emu:
        for mode, events in (("events", True), ("polling", False)):
            config = work / f"{mode}.toml"
            write_config(config, emu, root, state, events=events)
            daemon = Daemon(config, emu, work / f"daemon-{mode}.log")
            try:
                if mode == "events":
                    took = wait_uploaded(daemon, found, timeout=3600)
                    print(f"{mode}: initial upload of {found} files took {took:.0f} s")
                time.sleep(30)  # the last batch's confirmation and the first rescans settle
                before, t0 = daemon.cpu_s(), time.monotonic()
                time.sleep(args.idle_minutes * 60)
                cpu, wall = daemon.cpu_s() - before, time.monotonic() - t0
                load = os.getloadavg()[0]
                print(
                    f"{mode}: idle {100 * cpu / wall:.2f} % of a core "
                    f"({cpu:.1f} CPU-s over {wall:.0f} s; load average {load:.1f})"
                )
                picked, upload = latencies(root, state, args.latency_files)
                print(f"{mode}: arrival to recorded: {summary(picked)}")
                print(f"{mode}: arrival to upload start: {summary(upload)}")
                if len(upload) < args.latency_files:
                    code = 1
            finally:
                daemon.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
