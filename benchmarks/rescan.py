"""A no-op rescan against a bare Python walk of the same tree, side by side (issue 14 point 3).

    .venv/bin/python benchmarks/rescan.py [--files 200000] [--runs 3] [--other-src DIR]

Builds (once, reused under ``benchmarks/data/``) a tree of ``--files`` tiny PNGs in folders of
1,000 (scenario 6's data set at 200,000), uploads it once into a fresh emulator and manifest
with ``rfbatch upload``, then runs, alternating, ``--runs`` times each:

* the bare walk: ``os.scandir`` recursion and a ``stat`` of every entry, in its own process
  (this script with ``--bare-walk DIR``), interpreter start-up included as for rfbatch;
* the no-op rerun: the same ``rfbatch upload`` again, which must send nothing and report every
  file unchanged;
* with ``--other-src DIR``, the same rerun with ``PYTHONPATH=DIR`` (another rfbatch's ``src``,
  an A/B of two versions on one box).

Each is measured as a process tree (:func:`harness.proctree.measure`: wall, CPU from ``wait4``,
peak RSS). Prints the medians and the ratio rerun / walk (the goal: at most 2.5), and writes
everything to ``benchmarks/results/rescan-<stamp>.json``. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.datasets import ImageSet, ensure, warm
from harness.emu import Emulator
from harness.proctree import Measurement, measure
from harness.scenarios import clean_env, quiet_disk
from run import compile_rfbatch, rfbatch_command

HERE = Path(__file__).resolve().parent
KEY = "rf-bench-rescan-key"
BATCH = "rescan-bench"
GOAL = 2.5
TIMEOUT = 1800.0


def bare_walk(root: str) -> tuple[int, int]:
    """Every entry under ``root`` listed and stat'ed: what any rescan must do at least."""
    files = folders = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as listing:
            for entry in listing:
                entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    folders += 1
                    stack.append(entry.path)
                else:
                    files += 1
    return files, folders


def tiny_set(files: int) -> ImageSet:
    # Scenario 6's spec at 200,000 (same name and seed), so its data set is reused.
    name = f"tiny-{files // 1000}k" if files % 1000 == 0 else f"tiny-{files}"
    return ImageSet(name, files, 0, 0, 6, per_dir=1000)


def row(m: Measurement) -> dict[str, Any]:
    return {
        "wall_s": round(m.wall_s, 3),
        "cpu_s": round(m.cpu_s, 3),
        "user_s": round(m.user_s, 3),
        "sys_s": round(m.sys_s, 3),
        "peak_rss_mb": round(m.peak_rss / 1e6, 1),
        "returncode": m.returncode,
        "other_cpu_s": round(m.other_cpu_s, 2),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(r[key] for r in runs)), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--other-src", type=Path, default=None, help="A/B: another rfbatch src")
    parser.add_argument("--bare-walk", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_walk is not None:
        files, folders = bare_walk(args.bare_walk)
        print(json.dumps({"files": files, "folders": folders}))
        return 0
    compile_rfbatch()
    data = ensure(tiny_set(args.files), args.data_dir, sys.executable)
    work = args.data_dir / "rescan-run"
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True)
    state = work / "state"
    upload = [*rfbatch_command(), "upload", str(data.path), "--batch", BATCH]
    upload += ["--state-dir", str(state), "--json"]
    walk = [sys.executable, str(Path(__file__).resolve()), "--bare-walk", str(data.path)]
    variants: dict[str, tuple[list[str], dict[str, str]]] = {"walk": (walk, {})}
    here_src = os.environ.get("PYTHONPATH", "")
    variants["rerun"] = (upload, {"PYTHONPATH": here_src} if here_src else {})
    if args.other_src is not None:
        variants["rerun-other"] = (upload, {"PYTHONPATH": str(args.other_src)})
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    code = 0
    with Emulator(sys.executable, work / "emulator", logs, KEY) as emu:
        warm(data)
        env = clean_env(emu.env())

        def run(label: str, cmd: list[str], extra: dict[str, str]) -> tuple[Measurement, Path]:
            quiet_disk()
            out = logs / f"{label}.out"
            m = measure(
                cmd,
                env={**env, **extra},
                stdout=out,
                stderr=logs / f"{label}.err",
                timeout=TIMEOUT,
                emulator_pid=emu.pid,
            )
            return m, out

        first, _ = run("upload", upload, variants["rerun"][1])
        print(f"upload of {data.files} files: {first.wall_s:.1f} s, {first.cpu_s:.1f} CPU-s")
        if first.returncode != 0:
            print(f"the upload failed; see {logs}", file=sys.stderr)
            return 1
        run("walk-warm", walk, {})  # the folders' entries in the dentry cache for everyone
        for n in range(args.runs):
            # Rotate the order, so a slow spell of the machine does not land on one variant.
            names = list(variants)
            names = names[n % len(names) :] + names[: n % len(names)]
            for name in names:
                cmd, extra = variants[name]
                m, out = run(f"{name}-{n}", cmd, extra)
                record = row(m)
                if name != "walk":
                    told = json.loads(out.read_text() or "{}")
                    record["files_sent"] = told.get("files_sent")
                    record["files_unchanged"] = told.get("files_unchanged")
                    record["inner_s"] = told.get("seconds")
                    if m.returncode != 0 or told.get("files_unchanged") != data.files:
                        record["failed"] = True
                        code = 1
                results[name].append(record)
                print(
                    f"  {name:<12} run {n}: {m.wall_s:6.2f} s  cpu {m.cpu_s:6.2f} s  "
                    f"rss {m.peak_rss / 1e6:5.1f} MB"
                )
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        summary[name] = {k: median_of(runs, k) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
        summary[name]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    for name in results:
        if name == "walk":
            continue
        for key in ("wall_s", "cpu_s"):
            summary[name][f"{key}_ratio"] = round(summary[name][key] / summary["walk"][key], 2)
    print(f"\nmedians of {args.runs} ({data.files} files in {data.path}):")
    print(f"  {'':<12} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'wall ratio':>11}")
    for name, s in summary.items():
        ratio = f"{s['wall_s_ratio']:.2f}x" if "wall_s_ratio" in s else ""
        print(
            f"  {name:<12} {s['wall_s']:8.2f} {s['cpu_s']:8.2f} {s['peak_rss_mb']:12.1f} "
            f"{ratio:>11}"
        )
    ratio = summary["rerun"]["wall_s_ratio"]
    print(f"goal: rerun within {GOAL}x the bare walk: {'met' if ratio <= GOAL else 'MISSED'}")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out_path = HERE / "results" / f"rescan-{stamp}.json"
    out_path.write_text(
        json.dumps(
            {
                "files": data.files,
                "folders_of": 1000,
                "runs": args.runs,
                "load_average": os.getloadavg(),
                "pythonpath": here_src,
                "other_src": str(args.other_src) if args.other_src else None,
                "upload": row(first),
                "results": results,
                "medians": summary,
                "goal_ratio": GOAL,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written: {out_path}")
    shutil.rmtree(state, ignore_errors=True)
    return code


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    sys.exit(code)
