"""CPU per exported file, two rfbatch trees side by side (issue 14: export ≤ 0.8 CPU-ms per file).

    .venv/bin/python benchmarks/export_cpu.py --url http://127.0.0.1:PORT --key KEY --batch src10k \
        --files 10000 --bytes 1100519351 --old /work/main/src --new src \
        --targets shm=/dev/shm/x,disk=/work/data-x/out [--runs 3]

The emulator at ``--url`` must already hold ``--batch`` (staged by ``rfbatch upload`` into an
emulator started with ``--store digests``, as ``harness/scenarios.stage`` does); it is reused by
every run, so each run costs the same on the server side. For every round, target and tree (the
trees alternate order from round to round, so a slow spell of the shared machine does not land
on one of them), ``rfbatch export BATCH -o OUT --state-dir S --json`` runs in a child with
``PYTHONPATH`` set to the tree, into a fresh folder and state dir; the child's own CPU comes from
its rusage (``os.wait4``: user + system), its peak RSS too. A run counts only when the folder then
holds every file with the right total size. Start-up is counted apart: the median CPU of
``rfbatch --version`` from the same tree is taken off before dividing by the files.

Bytecode goes to a cache outside the trees (``PYTHONPYCACHEPREFIX``), written by one untimed
warm-up export per tree, as an installed copy would have it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 900.0


def _env(src: Path, cache: Path, url: str, key: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RFBATCH_", "ROBOFLOW_"))
        and k not in ("API_BASE_URL", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(
        PYTHONPATH=str(src.resolve()),
        PYTHONPYCACHEPREFIX=str(cache),
        ROBOFLOW_API_KEY=key,
        API_BASE_URL=url,
    )
    return env


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """CPU seconds (user + system), peak RSS in bytes and stdout of one child run."""
    with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=devnull)
        deadline = time.monotonic() + TIMEOUT
        while True:
            # wait4 (not Popen.wait) so the child's own rusage comes back with its status.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"{' '.join(cmd)} timed out")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
        out.seek(0)
        return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out.read().decode()


def _tree(folder: Path) -> tuple[int, int]:
    files = nbytes = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if not name.startswith("."):
                files += 1
                nbytes += os.stat(os.path.join(root, name)).st_size
    return files, nbytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="bench", help="the API key the emulator was given")
    parser.add_argument("--batch", required=True)
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--old", type=Path, required=True, help="src folder of the old tree")
    parser.add_argument("--new", type=Path, required=True, help="src folder of the new tree")
    parser.add_argument("--targets", required=True, help="name=folder,... (each is emptied)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rfbatch-export-cpu"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--startup-runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        parser.error("--url must be an emulator on 127.0.0.1")
    targets = dict(t.split("=", 1) for t in args.targets.split(","))
    trees = {"old": args.old, "new": args.new}
    python = sys.executable
    envs = {
        name: _env(src, args.work / f"pycache-{name}", args.url, args.key)
        for name, src in trees.items()
    }
    state = args.work / "state"

    def export(tree: str, out: Path) -> tuple[float, int, float]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        os.sync()
        cmd = [python, "-m", "rfbatch", "export", args.batch, "-o", str(out)]
        cpu, rss, stdout = _run([*cmd, "--state-dir", str(state), "--json"], envs[tree])
        files, nbytes = _tree(out)
        shutil.rmtree(out, ignore_errors=True)
        if (files, nbytes) != (args.files, args.bytes):
            raise RuntimeError(f"{tree}: got {files} files, {nbytes} bytes")
        summary = json.loads(stdout)
        inner = summary[0]["seconds"] if isinstance(summary, list) else summary["seconds"]
        return cpu, rss, float(inner)

    first = next(iter(targets.values()))
    for tree in trees:  # warm-up: writes the bytecode cache
        export(tree, Path(first))
    startup = {
        tree: statistics.median(
            _run([python, "-m", "rfbatch", "--version"], envs[tree])[0]
            for _ in range(args.startup_runs)
        )
        for tree in trees
    }
    samples: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    for run in range(args.runs):
        for target, folder in targets.items():
            order = list(trees) if run % 2 == 0 else list(reversed(trees))
            for tree in order:
                got = export(tree, Path(folder))
                samples.setdefault((target, tree), []).append(got)
                ms = (got[0] - startup[tree]) * 1000 / args.files
                print(
                    f"run {run} {target:<5} {tree}: cpu {got[0]:.2f} s ({ms:.3f} ms/file), "
                    f"rss {got[1] / 1e6:.0f} MB, inner {got[2]:.2f} s",
                    flush=True,
                )
    print("start-up CPU (--version): " + ", ".join(f"{t} {s:.3f} s" for t, s in startup.items()))
    print(f"{'target':<6} {'tree':<4} {'cpu s':>7} {'ms/file':>8} {'peak MB':>8} {'inner s':>8}")
    for (target, tree), runs in samples.items():
        cpu = statistics.median(r[0] for r in runs)
        print(
            f"{target:<6} {tree:<4} {cpu:7.2f} {(cpu - startup[tree]) * 1000 / args.files:8.3f} "
            f"{max(r[1] for r in runs) / 1e6:8.0f} {statistics.median(r[2] for r in runs):8.2f}"
        )
    shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
