"""A daemon watching a big, quiet tree: its idle CPU, and how soon a new file is taken.

    .venv/bin/python benchmarks/idle.py --files 200000 [--idle-minutes 10] [--latency-files 40]
        [--modes events,polling]

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
an unchanged tree) and the average those give at the default intervals, and what the daemon's
own log says its rescans cost. Everything goes to ``benchmarks/results/idle-<stamp>.json`` too.
Everything talks to 127.0.0.1 only.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"median": None, "p99": None, "n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "p99": round(p99, 3), "n": len(ordered)}


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    p = percentiles(values)
    return f"median {p['median']:.2f} s, p99 {p['p99']:.2f} s (n={p['n']})"


def rescans_logged(log: Path, since: str, until: str) -> dict[str, Any]:
    """The daemon's own ``watch.rescan`` lines between two log timestamps: how many of each
    kind, and their median CPU seconds (the whole process's CPU over each rescan)."""
    found: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        if '"watch.rescan"' not in line:
            continue
        event = json.loads(line)
        if since <= event["timestamp"] <= until:
            found.setdefault(event["kind"], []).append(float(event["cpu_seconds"]))
    return {
        kind: {"count": len(cpu), "median_cpu_s": round(statistics.median(cpu), 4)}
        for kind, cpu in found.items()
    }


def log_stamp() -> str:
    """Now, as the daemon's JSON log writes its timestamps (they compare as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--latency-files", type=int, default=40)
    parser.add_argument("--modes", default="events,polling", help="events, polling or both")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"events", "polling"}:
        parser.error("--modes takes events, polling or both, comma-separated")
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
    report: dict[str, Any] = {
        "files": found,
        "idle_minutes": args.idle_minutes,
        "latency_files": args.latency_files,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "in_process": {"full_cpu_s": round(full, 3), "quick_cpu_s": round(quick, 4)},
        "modes": {},
    }
    with Emulator(sys.executable, work / "emulator", work / "logs", KEY) as emu:
        for index, mode in enumerate(modes):
            config = work / f"{mode}.toml"
            write_config(config, emu, root, state, events=mode == "events")
            log = work / f"daemon-{mode}.log"
            daemon = Daemon(config, emu, log)
            row: dict[str, Any] = {}
            try:
                if index == 0:  # the first mode uploads the tree; the next reuses the manifest
                    took = wait_uploaded(daemon, found, timeout=3600)
                    print(f"{mode}: initial upload of {found} files took {took:.0f} s")
                    report["initial_upload_s"] = round(took, 1)
                time.sleep(30)  # the last batch's confirmation and the first rescans settle
                since = log_stamp()
                before, t0 = daemon.cpu_s(), time.monotonic()
                time.sleep(args.idle_minutes * 60)
                cpu, wall = daemon.cpu_s() - before, time.monotonic() - t0
                load = os.getloadavg()[0]
                rescans = rescans_logged(log, since, log_stamp())
                print(
                    f"{mode}: idle {100 * cpu / wall:.2f} % of a core "
                    f"({cpu:.1f} CPU-s over {wall:.0f} s; load average {load:.1f}); "
                    f"rescans meanwhile: {rescans}"
                )
                picked, upload = latencies(root, state, args.latency_files)
                print(f"{mode}: arrival to recorded: {summary(picked)}")
                print(f"{mode}: arrival to upload start: {summary(upload)}")
                row = {
                    "idle_pct_of_core": round(100 * cpu / wall, 3),
                    "idle_cpu_s": round(cpu, 2),
                    "idle_wall_s": round(wall, 1),
                    "load_average": round(load, 2),
                    "rescans_during_idle": rescans,
                    "picked_up_s": percentiles(picked),
                    "upload_start_s": percentiles(upload),
                    "picked_up_raw": [round(v, 3) for v in picked],
                    "upload_start_raw": [round(v, 3) for v in upload],
                }
                if len(upload) < args.latency_files:
                    code = 1
            finally:
                daemon.stop()
                report["modes"][mode] = row
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out = HERE / "results" / f"idle-{stamp}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
