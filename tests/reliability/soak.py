"""Soak: ``rfbatch run`` for minutes, files arriving all the time, mixed faults on.

``make soak`` runs ``python -m tests.reliability.soak`` (five minutes by default; ``--minutes``
changes it). The daemon runs in a subprocess against an in-process emulator whose fault profile
mixes 429s, 5xx, resets, slow answers, truncated bodies and expired URLs. A writer drops images
(and now and then a video) into the source folder the way a camera does (a temporary name, then a
rename). Every few seconds the daemon's resident memory (``VmRSS`` in ``/proc/<pid>/status``) and
open descriptors (``/proc/<pid>/fd``) are sampled.

When the time is up the writer stops and the daemon is given time to drain: every file must be
in the emulator and every batch's results on disk. The report gives throughput, the memory and
descriptor curves, and the verdicts: nothing lost, no memory growth after warm-up, a peak
under the ceiling, no descriptor leak. The exit status is 1 when a verdict fails.

Memory is judged by the slope of a least-squares line through RSS against files delivered over
the last 60 % of the run (MiB per 10,000 files; the report also gives MiB per hour). A ratio of the
end to the warm-up level cannot see a slow leak in a short run; a slope can: 1 MiB per 10,000
files is what a daemon sending a million files a day may grow by, at most, in a day.

``--tracemalloc`` starts the daemon with ``PYTHONTRACEMALLOC`` set: the daemon then keeps a first
and a latest allocation snapshot in its state folder, and the report lists the allocation sites
that grew most between them. ``MALLOC_ARENA_MAX`` and the like pass through to the daemon.

``--delete-after SECONDS`` makes the writer behave like camera storage: files older than that
(once delivered) are deleted. With ``--retention-days`` short the daemon then forgets them, and
the manifest must stay flat: its size (database and write-ahead log) is sampled too, and judged
by its slope against files delivered over the last 60 % of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.pipeline.daemon import TRACEMALLOC_DIR
from rfbatch.samples import png_bytes
from tests.daemon.support import DaemonProcess, daemon, write_config
from tests.reliability.support_a import emulator_at, expected_results, files_under, sha

SAMPLE_SECONDS = 5.0
DRAIN_SECONDS = 240.0
PREFIX = "rfbatch-"
# Memory may settle for a while (caches, first batches, imports); growth is judged after this.
WARMUP_FRACTION = 0.4  # the slope is fitted over the last 60 % of the run
RSS_SLOPE_LIMIT = 1.0  # MiB per 10,000 files delivered
RSS_PEAK_LIMIT_KIB = 100_000_000 // 1024  # 100 MB
# Without forgetting, the manifest grows by a few MiB per 10,000 files; flat means far under.
MANIFEST_SLOPE_LIMIT = 0.2  # MiB per 10,000 files delivered, when the writer deletes
FD_GROWTH_LIMIT = 16

MIXED = FaultProfile(
    routes={
        "*": FaultRates(
            status_429=0.015,
            status_502=0.015,
            status_503=0.015,
            status_504=0.015,
            reset=0.015,
            slow=0.015,
            truncate=0.015,
        ),
        # A 500 only where it is sent again: storage (the API, as the official client, does not).
        "put": FaultRates(reset=0.03, expire=0.02, status_500=0.005),
        "download": FaultRates(truncate=0.03, expire=0.02, status_500=0.005),
    },
    seed=2026,
    retry_after=1,
    slow_seconds=0.5,
)


@dataclass
class Sample:
    seconds: float
    rss_kib: int
    fds: int
    written: int
    delivered: int
    manifest_bytes: int = 0
    manifest_files: int = 0


@dataclass
class Soak:
    root: Path
    emulator: Emulator
    written: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    written_bytes: int = 0
    samples: list[Sample] = field(default_factory=list)
    arrived: deque[tuple[float, str]] = field(default_factory=deque)  # (written at, rel)
    delivered_shas: set[str] = field(default_factory=set)
    deleted: int = 0

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def emulator_dir(self) -> Path:
        return self.root / "emulator"


def proc_stats(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open descriptors) of a live process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def input_batches(state: dict[str, Any]) -> list[str]:
    return sorted(b for b in state["batches"] if b.startswith(PREFIX))


def delivered(state: dict[str, Any]) -> dict[str, int]:
    """sha256 -> copies received, over the daemon's input batches."""
    out: dict[str, int] = {}
    for batch in input_batches(state):
        for item in state["batches"][batch]["items"]:
            out[item["sha256"]] = out.get(item["sha256"], 0) + int(item["received"])
    return out


def results_missing(soak: Soak, state: dict[str, Any]) -> int:
    """Input batches whose job results are not (all, whole) on disk yet."""
    on_disk = files_under(soak.out)
    missing = 0
    for batch in input_batches(state):
        wanted = expected_results(state, soak.emulator_dir, batch)
        if not wanted or any(on_disk.get(rel) != digest for rel, digest in wanted.items()):
            missing += 1
    return missing


def _write(path: Path, data: bytes) -> None:
    # A camera writes under a temporary name and renames when done; rfbatch ignores *.tmp.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


async def writer(soak: Soak, rate: float, stop: anyio.Event) -> None:
    """About ``rate`` images a second, in small bursts, and a video every 200 images."""
    n = 0
    burst = max(1, int(rate / 4))
    while not stop.is_set():
        files: dict[str, bytes] = {}
        for _ in range(burst):
            minute = n // 600
            files[f"cam{n % 3}/m{minute:03d}/img-{n:06d}.png"] = png_bytes(
                8, 8, n, pad_to=2000 + n % 3000
            )
            if n % 200 == 199:
                files[f"clips/m{minute:03d}/clip-{n:06d}.mp4"] = os.urandom(50_000 + n % 1000)
            n += 1
        for rel, data in files.items():
            await anyio.to_thread.run_sync(_write, soak.src / rel, data)
            soak.written[rel] = sha(data)
            soak.written_bytes += len(data)
            soak.arrived.append((time.monotonic(), rel))
        await anyio.sleep(burst / rate)


async def deleter(soak: Soak, after: float) -> None:
    """Camera storage: files older than ``after`` seconds go, once delivered, then empty folders."""
    while True:
        cutoff = time.monotonic() - after
        while soak.arrived and soak.arrived[0][0] < cutoff:
            _, rel = soak.arrived[0]
            if soak.written[rel] not in soak.delivered_shas:
                break  # still on its way: a camera's retention is longer than a delivery
            soak.arrived.popleft()
            await anyio.to_thread.run_sync(_remove, soak.src / rel, soak.src)
            soak.deleted += 1
        await anyio.sleep(1.0)


def _remove(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    folder = path.parent
    while folder != root and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def manifest_stats(state_dir: Path) -> tuple[int, int]:
    """(bytes of the manifest and its WAL, file rows), read beside the running daemon."""
    db = state_dir / "manifest.sqlite3"
    size = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        rows = -1
    return size, rows


async def sampler(soak: Soak, d: DaemonProcess, started: float) -> None:
    pid = d.process.pid
    while d.process.returncode is None:
        rss, fds = await anyio.to_thread.run_sync(proc_stats, pid)
        db_bytes, db_files = await anyio.to_thread.run_sync(manifest_stats, soak.root / "state")
        state = soak.emulator.state()
        got = delivered(state)
        soak.delivered_shas = set(got)
        soak.samples.append(
            Sample(
                seconds=round(time.monotonic() - started, 1),
                rss_kib=rss,
                fds=fds,
                written=len(soak.written),
                delivered=len(got),
                manifest_bytes=db_bytes,
                manifest_files=db_files,
            )
        )
        await anyio.sleep(SAMPLE_SECONDS)


def config(soak: Soak, retention_days: float) -> Path:
    return write_config(
        soak.root / "config.toml",
        soak.emulator,
        soak.root,
        api={"read_timeout": 10.0, "retry_attempts": 8},
        scan={"settle_seconds": 1.0, "rescan_interval_seconds": 30.0},
        upload={"shard_max_files": 100, "ingest_poll_seconds": 0.5},
        job={"workflow_id": "wf-soak", "poll_seconds": 0.5},
        export={"min_free_bytes": 0},
        state={"dir": str(soak.root / "state"), "retention_days": retention_days},
        daemon={
            "output_dir": str(soak.out),
            "batch_window_seconds": 20.0,
            "batch_max_items": 1000,
            "shard_linger_seconds": 1.0,
            "lifecycle_poll_seconds": 1.0,
        },
    )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y against x; 0 when x does not vary (nothing to fit)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def after_warmup(samples: list[Sample]) -> list[Sample]:
    """The samples of the last 60 % of the run (all of them when there are too few)."""
    running = [s for s in samples if s.seconds > 0]
    if not running:
        return []
    cut = running[-1].seconds * WARMUP_FRACTION
    return [s for s in running if s.seconds >= cut] or running


def rss_slopes(samples: list[Sample]) -> tuple[float, float]:
    """(MiB per 10,000 files delivered, MiB per hour) of RSS after warm-up."""
    warm = after_warmup(samples)
    per_file = slope([(s.delivered, s.rss_kib / 1024) for s in warm])
    per_second = slope([(s.seconds, s.rss_kib / 1024) for s in warm])
    return round(per_file * 10_000, 3), round(per_second * 3600, 3)


def manifest_slope(samples: list[Sample]) -> float:
    """MiB of manifest per 10,000 files delivered, after warm-up."""
    warm = after_warmup(samples)
    return round(slope([(s.delivered, s.manifest_bytes / 2**20) for s in warm]) * 10_000, 3)


def verdicts(soak: Soak, state: dict[str, Any], missing_results: int) -> dict[str, Any]:
    got = delivered(state)
    wanted = set(soak.written.values())
    lost = len(wanted - set(got))
    twice = sum(n - 1 for n in got.values() if n > 1)
    running = [s for s in soak.samples if s.seconds > 0]
    warm = after_warmup(soak.samples)
    per_10k, per_hour = rss_slopes(soak.samples)
    rss_max = max(s.rss_kib for s in running)
    fd_base = min(s.fds for s in warm)
    fd_last = warm[-1].fds
    last = soak.samples[-1]
    manifest: dict[str, Any] = {
        "files_deleted_by_writer": soak.deleted,
        "manifest_bytes_last": last.manifest_bytes,
        "manifest_files_last": last.manifest_files,
        "manifest_bytes_per_file": round(last.manifest_bytes / max(1, last.manifest_files)),
        "manifest_slope_mib_per_10k_files": manifest_slope(soak.samples),
    }
    if soak.deleted:
        manifest["ok_manifest_flat"] = manifest_slope(soak.samples) <= MANIFEST_SLOPE_LIMIT
    return manifest | {
        "files_written": len(soak.written),
        "files_lost": lost,
        "files_received_twice": twice,
        "batches_without_results": missing_results,
        "rss_after_warmup_kib": warm[0].rss_kib,
        "rss_last_kib": warm[-1].rss_kib,
        "rss_max_kib": rss_max,
        "rss_slope_mib_per_10k_files": per_10k,
        "rss_slope_mib_per_hour": per_hour,
        "fds_min_after_warmup": fd_base,
        "fds_last": fd_last,
        "fds_max": max(s.fds for s in running),
        "ok_nothing_lost": lost == 0 and missing_results == 0,
        "ok_memory_flat": per_10k <= RSS_SLOPE_LIMIT,
        "ok_memory_peak": rss_max <= RSS_PEAK_LIMIT_KIB,
        "ok_no_fd_leak": fd_last - fd_base <= FD_GROWTH_LIMIT,
    }


async def run(
    minutes: float, rate: float, root: Path, delete_after: float | None, retention_days: float
) -> dict[str, Any]:
    async with emulator_at(root / "emulator", MIXED, job_tick=0.05) as emulator:
        soak = Soak(root, emulator)
        soak.src.mkdir(parents=True, exist_ok=True)
        async with daemon(config(soak, retention_days), emulator, root / "state") as d:
            started = time.monotonic()
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler, soak, d, started)
                tg.start_soon(writer, soak, rate, stop)
                if delete_after is not None:
                    tg.start_soon(deleter, soak, delete_after)
                await anyio.sleep(minutes * 60)
                stop.set()
                writing_ended = time.monotonic()
                print(f"writer stopped after {len(soak.written)} files; draining", flush=True)
                with anyio.move_on_after(DRAIN_SECONDS):
                    while True:
                        state = emulator.state()
                        done = set(delivered(state)) >= set(soak.written.values())
                        if done and not results_missing(soak, state):
                            break
                        await anyio.sleep(1.0)
                drained = time.monotonic()
                d.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(60):
                    status = await d.process.wait()
                tg.cancel_scope.cancel()
        state = emulator.state()
        missing = results_missing(soak, state)
        report = verdicts(soak, state, missing)
        report.update(
            minutes=minutes,
            exit_status=status,
            drain_seconds=round(drained - writing_ended, 1),
            throughput_files_per_second=round(len(soak.written) / (drained - started), 1),
            throughput_mib_per_second=round(soak.written_bytes / (drained - started) / 2**20, 3),
            faults_injected=state["counters"]["faultsInjected"],
            batches=len(input_batches(state)),
            retries_logged=len(d.saw("api.retry")) + len(d.saw("transfer.retry")),
            errors_logged=sum(1 for e in d.events if e.get("level") == "error"),
            samples=[asdict(s) for s in soak.samples],
        )
        report["ok_clean_exit"] = status == 0
        return report


def print_growth(folder: Path, top: int = 15) -> None:
    """The allocation sites that grew most between the daemon's first and latest snapshot."""
    first, latest = folder / "first.tracemalloc", folder / "latest.tracemalloc"
    if not (first.exists() and latest.exists()):
        print(f"tracemalloc: no snapshots in {folder}")
        return
    old = tracemalloc.Snapshot.load(str(first))
    new = tracemalloc.Snapshot.load(str(latest))
    total = sum(s.size for s in new.statistics("filename")) - sum(
        s.size for s in old.statistics("filename")
    )
    print(f"tracemalloc: traced memory grew {total / 2**20:.2f} MiB between the snapshots")
    for stat in new.compare_to(old, "lineno")[:top]:
        print(f"  {stat}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0, help="images written per second")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--delete-after", type=float, default=None, help="delete delivered files this old (s)"
    )
    parser.add_argument("--retention-days", type=float, default=3.0, help="[state] retention")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace the daemon's allocations; list growth"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="rfbatch-soak-"))
    print(f"soak: {args.minutes} min, {args.rate} images/s, mixed faults, in {root}", flush=True)
    if args.tracemalloc:
        os.environ["PYTHONTRACEMALLOC"] = "1"  # the daemon inherits it; this process started
    try:
        report = anyio.run(
            run,
            args.minutes,
            args.rate,
            root,
            args.delete_after,
            args.retention_days,
            backend="asyncio",
            backend_options={"use_uvloop": True},
        )
        if args.tracemalloc:
            print_growth(root / "state" / TRACEMALLOC_DIR)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    samples = report.pop("samples")
    print(
        f"{'t (s)':>8} {'RSS (MiB)':>10} {'fds':>5} {'written':>8} {'delivered':>10} "
        f"{'manifest KiB':>13} {'rows':>7}"
    )
    for s in samples:
        print(
            f"{s['seconds']:>8} {s['rss_kib'] / 1024:>10.1f} {s['fds']:>5} "
            f"{s['written']:>8} {s['delivered']:>10} {s['manifest_bytes'] // 1024:>13} "
            f"{s['manifest_files']:>7}"
        )
    for key, value in report.items():
        print(f"{key}: {value}")
    print(
        f"memory slope after warm-up: {report['rss_slope_mib_per_10k_files']} MiB per 10,000 "
        f"files, {report['rss_slope_mib_per_hour']} MiB per hour (limit {RSS_SLOPE_LIMIT} MiB "
        f"per 10,000 files); peak {report['rss_max_kib'] / 1024:.1f} MiB"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({**report, "samples": samples}, indent=2))
    ok = all(v for k, v in report.items() if k.startswith("ok_"))
    print("soak: PASS" if ok else "soak: FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
