"""What TLS costs: CPU seconds per GB uploaded and exported, plain HTTP against HTTPS.

    .venv/bin/python benchmarks/tls_cost.py [--videos 4] [--video-mib 256]

For each transport (plain, then ``rfbatch emulator --tls``), a fresh separate-process emulator
(digests mode, no link cap) and two clients in turn: rfbatch (``rfbatch upload`` of a folder of
videos, then ``rfbatch export`` of that batch into /dev/shm) and the ceiling client
(``harness/ceiling.py videos`` / ``export``, which keeps nothing). Each client's CPU is the user
and system time of its process (its rusage), so the emulator's own TLS work is not counted. The
report gives CPU-s per GB for each, and what TLS adds. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.emu import Emulator
from run import compile_rfbatch, rfbatch_command

HERE = Path(__file__).resolve().parent
KEY = "rf-bench-tls-key"
CEILING = HERE / "harness" / "ceiling.py"


def videos(count: int, mib: int) -> Path:
    folder = HERE / "data" / f"tls-videos-{count}x{mib}"
    if len(list(folder.glob("*.mp4"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for n in range(count):
        with (folder / f"clip{n}.mp4").open("wb") as out:
            for _ in range(mib):
                out.write(os.urandom(1024 * 1024))
    return folder


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (its output discarded); a failure stops the benchmark."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False, timeout=1800)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{command[:3]} exited {done.returncode}: {tail}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--video-mib", type=int, default=256)
    args = parser.parse_args(argv)
    compile_rfbatch()
    source = videos(args.videos, args.video_mib)
    gigabytes = args.videos * args.video_mib * 1024 * 1024 / 1e9
    work = Path(tempfile.mkdtemp(prefix="rfbatch-tls-", dir=HERE / "data"))
    results: dict[tuple[str, str, str], tuple[float, float]] = {}
    try:
        for transport, extra in (("plain", ()), ("tls", ("--tls",))):
            emu_dir = work / f"emu-{transport}"
            with Emulator(sys.executable, emu_dir, work / "logs", KEY, extra_args=extra) as emu:
                env = {k: v for k, v in os.environ.items() if not k.startswith("RFBATCH_")}
                env |= emu.env() | {"RFBATCH_STATE__DIR": str(work / f"state-{transport}")}
                env["RFBATCH_SCAN__SETTLE_SECONDS"] = "0"
                out = Path(tempfile.mkdtemp(prefix="rfbatch-tls-", dir="/dev/shm"))
                try:
                    rf = [*rfbatch_command()]
                    results[(transport, "rfbatch", "upload")] = timed(
                        [*rf, "upload", str(source), "--batch", "rf"], env
                    )
                    results[(transport, "ceiling", "upload")] = timed(
                        [
                            sys.executable,
                            str(CEILING),
                            "videos",
                            "--source",
                            str(source),
                            "--batch",
                            "ce",
                        ],
                        env,
                    )
                    results[(transport, "rfbatch", "export")] = timed(
                        [*rf, "export", "rf-videos", "--output", str(out)], env
                    )
                    results[(transport, "ceiling", "export")] = timed(
                        [sys.executable, str(CEILING), "export", "--batch", "rf-videos"], env
                    )
                finally:
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.videos} videos of {args.video_mib} MiB ({gigabytes:.2f} GB) each way")
    print(
        f"{'client':<9}{'step':<8}{'plain CPU-s/GB':>16}{'TLS CPU-s/GB':>14}{'TLS adds':>10}"
        f"{'plain s':>9}{'TLS s':>8}"
    )
    for client in ("rfbatch", "ceiling"):
        for step in ("upload", "export"):
            plain_wall, plain_cpu = results[("plain", client, step)]
            tls_wall, tls_cpu = results[("tls", client, step)]
            print(
                f"{client:<9}{step:<8}{plain_cpu / gigabytes:>16.2f}{tls_cpu / gigabytes:>14.2f}"
                f"{(tls_cpu - plain_cpu) / gigabytes:>10.2f}{plain_wall:>9.1f}{tls_wall:>8.1f}"
            )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
