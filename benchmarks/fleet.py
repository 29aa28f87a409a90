"""A fleet of ``rfbatch run`` workers on one PostgreSQL ledger: 1, 2 and 4 workers over one tree.

    .venv/bin/python benchmarks/fleet.py [--files 2000] [--size-kb 200] [--workers 1,2,4]
        [--runs 3] [--link rtt=40ms,conn=25MB/s,total=100MB/s] [--tls] [--shard-files 256]

Builds (once) a tree of ``--files`` images under ``benchmarks/data/fleet-<files>-<size>``, starts
one emulator (digests mode; ``--tls`` and ``--link`` put it behind HTTPS and a shaped link, as
``make bench-wan`` does), and for each worker count, runs alternating so the machine's drift
falls on every count alike: a fresh database on the PostgreSQL at ``--pg`` (default
127.0.0.1:5432), that many daemons started together over the tree, and the time until the ledger
records every file uploaded. Reported per count (medians of ``--runs``): wall seconds, MB/s,
the speed-up over one worker, the workers' CPU seconds (all of them, start-up included), and the
ledger's own cost as the server counts it for that database (``pg_stat_database``): transactions
and milliseconds of statement execution per file.

Everything talks to 127.0.0.1 only. Results go to ``benchmarks/results/fleet-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.emu import Emulator
from harness.proctree import process_cpu_s
from run import compile_rfbatch, rfbatch_command

HERE = Path(__file__).resolve().parent
KEY = "rf-bench-fleet-key"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Run:
    workers: int
    seconds: float
    mb_per_s: float
    cpu_s: float
    transactions_per_file: float
    ledger_ms_per_file: float


def build_tree(files: int, size: int) -> Path:
    root = HERE / "data" / f"fleet-{files}-{size // 1024}k"
    done = root / ".complete"
    if done.exists():
        return root
    for i in range(files):
        folder = root / f"cam{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # A JPEG start, then bytes unique per file (the emulator in digests mode checks none).
        body = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "big") * (size // 8)
        (folder / f"img{i:06d}.jpg").write_bytes(body[:size])
    old = time.time() - 3600
    for path in root.rglob("*.jpg"):
        os.utime(path, (old, old))
    done.write_text("")
    return root


def database_url(admin: str, name: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))


async def admin_execute(admin: str, sql: str) -> None:
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def ledger_reading(url: str) -> tuple[int, int, float]:
    """Files recorded uploaded (or further), transactions committed, ms of statements run."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        try:
            done = await conn.fetchval(
                "SELECT count(*) FROM files WHERE state IN ('uploaded', 'ingested')"
            )
        except asyncpg.UndefinedTableError:  # no worker has migrated it yet
            done = 0
        # Counters the server keeps per database; flushed to the view every so often.
        row = await conn.fetchrow(
            "SELECT xact_commit, active_time FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        assert row is not None
        return int(done), int(row[0]), float(row[1] or 0.0)
    finally:
        await conn.close()


def write_config(
    path: Path, emu: Emulator, root: Path, state: Path, url: str, prefix: str, shard_files: int
) -> None:
    lines = [
        "[api]",
        f'base_url = "{emu.url}"',
        "[upload]",
        f"shard_max_files = {shard_files}",
        "[daemon]",
        f"sources = [{json.dumps(str(root))}]",
        'http_listen = "127.0.0.1:0"',
        "min_free_bytes = 0",
        f'batch_prefix = "{prefix}"',
        "[state]",
        f"dir = {json.dumps(str(state))}",
        f"url = {json.dumps(url)}",
        "[log]",
        'format = "json"',
    ]
    path.write_text("\n".join(lines) + "\n")


def start_worker(config: Path, emu: Emulator, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFBATCH_")}
    env.update(emu.env())
    with log.open("wb") as err:
        return subprocess.Popen(
            [*rfbatch_command(), "run", "-c", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def one_run(
    emu: Emulator,
    admin: str,
    root: Path,
    files: int,
    total_bytes: int,
    workers: int,
    tag: str,
    shard_files: int,
) -> Run:
    work = HERE / "data" / "fleet-runs" / tag
    work.mkdir(parents=True, exist_ok=True)
    name = f"rfbatch_bench_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin, f'CREATE DATABASE "{name}"')
    url = database_url(admin, name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _, xact0, active0 = await ledger_reading(url)
        started = time.monotonic()
        for n in range(workers):
            config = work / f"w{n}.toml"
            write_config(config, emu, root, work / f"state{n}", url, f"f{tag}", shard_files)
            procs.append(start_worker(config, emu, work / f"w{n}.log"))
        while True:
            done, _, _ = await ledger_reading(url)
            if done >= files:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {work}")
            if time.monotonic() - started > 1800:
                raise RuntimeError("not every file was uploaded within 30 minutes")
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        cpu = sum(process_cpu_s(p.pid) for p in procs)
        await asyncio.sleep(1.0)  # the statistics collector's flush
        _, xact1, active1 = await ledger_reading(url)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Run(
        workers=workers,
        seconds=round(seconds, 2),
        mb_per_s=round(total_bytes / seconds / 1e6, 1),
        cpu_s=round(cpu, 2),
        transactions_per_file=round((xact1 - xact0) / files, 3),
        ledger_ms_per_file=round((active1 - active0) / files, 3),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-kb", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--link", default="rtt=40ms,conn=25MB/s,total=100MB/s")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--shard-files", type=int, default=256, help="[upload] shard_max_files")
    parser.add_argument("--pg", default=os.environ.get("RFBATCH_BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    compile_rfbatch()
    size = args.size_kb * 1024
    root = build_tree(args.files, size)
    total = args.files * size
    extra = (["--tls"] if args.tls else []) + (["--link", args.link] if args.link else [])
    runs: list[Run] = []
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    with Emulator(
        sys.executable,
        HERE / "data" / "fleet-emu",
        HERE / "data" / "fleet-runs",
        KEY,
        extra_args=tuple(extra),
    ) as emu:
        for repeat in range(args.runs):
            order = counts if repeat % 2 == 0 else list(reversed(counts))
            for workers in order:
                tag = f"{stamp}-{repeat}-{workers}"
                run = await one_run(
                    emu, args.pg, root, args.files, total, workers, tag, args.shard_files
                )
                runs.append(run)
                print(json.dumps(asdict(run)), flush=True)
    base = statistics.median(r.seconds for r in runs if r.workers == counts[0])
    print(
        f"\n{args.files} files of {args.size_kb} KB, {args.shard_files} a shard,"
        f" link {args.link or 'none'}"
        f"{' over TLS' if args.tls else ''}, medians of {args.runs}\n"
    )
    print(
        "| workers | wall s | MB/s | vs 1 worker | CPU s (all) | ledger tx/file | ledger ms/file |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = []
    for workers in counts:
        mine = [r for r in runs if r.workers == workers]

        def med(field: str, rows: list[Run] = mine) -> float:
            return float(statistics.median(getattr(r, field) for r in rows))

        row = {
            "workers": workers,
            "seconds": med("seconds"),
            "mb_per_s": med("mb_per_s"),
            "speedup": round(base / med("seconds"), 2),
            "cpu_s": med("cpu_s"),
            "transactions_per_file": med("transactions_per_file"),
            "ledger_ms_per_file": med("ledger_ms_per_file"),
        }
        summary.append(row)
        print(
            f"| {workers} | {row['seconds']:.1f} | {row['mb_per_s']:.1f} | {row['speedup']:.2f}x"
            f" | {row['cpu_s']:.1f} | {row['transactions_per_file']:.2f}"
            f" | {row['ledger_ms_per_file']:.2f} |"
        )
    out = HERE / "results" / f"fleet-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "files": args.files,
                "size_kb": args.size_kb,
                "link": args.link,
                "tls": args.tls,
                "shard_files": args.shard_files,
                "runs": [asdict(r) for r in runs],
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    asyncio.run(main())
