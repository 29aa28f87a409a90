"""Where the time goes: rfbatch (and the emulator beside it) under py-spy.

``run.py --profile 1,5`` runs rfbatch once per chosen scenario under ``py-spy record`` while a
second py-spy is attached to the emulator process, both sampling at 100 Hz without pausing the
target (``--nonblocking``), with thread ids. The raw stacks go to ``benchmarks/data/profiles/``
and a summary is printed: how the samples split between threads, the functions with the most
samples on top of the stack (self time) and the rfbatch functions with the most samples anywhere
on the stack (inclusive time). py-spy lives in ``benchmarks/.venv-prof`` (``pip install
py-spy``), never in the project's ``.venv``; it attaches from outside, so rfbatch runs unchanged.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.datasets import ensure, warm
from harness.scenarios import (
    RF,
    Context,
    Scenario,
    clean_env,
    emulator,
    export_command,
    quiet_disk,
    stage,
    upload_command,
)

RATE = "100"
EXTRA: list[str] = ["--gil"]


@dataclass
class Profile:
    samples: int
    threads: Counter[str]
    self_time: Counter[str]
    inclusive: Counter[str]


def parse_raw(path: Path) -> Profile:
    """Read py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    prof = Profile(0, Counter(), Counter(), Counter())
    if not path.exists():
        return prof
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # With --subprocesses each stack starts with its process, then (--threads) its thread.
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        thread = frames[0] if frames and frames[0].startswith("thread ") else "?"
        if thread != "?":
            frames = frames[1:]
        prof.samples += count
        prof.threads[thread] += count
        if frames:
            prof.self_time[frames[-1]] += count
        for frame in set(frames):
            prof.inclusive[frame] += count
    return prof


def summary(title: str, prof: Profile, top: int = 15, focus: str = "rfbatch/") -> str:
    if not prof.samples:
        return f"## {title}\n(no samples)\n"
    total = prof.samples
    lines = [f"## {title}: {total} samples ({total / int(RATE):.1f} CPU-seconds sampled)"]
    lines.append(
        "threads: "
        + ", ".join(f"{t} {n * 100 / total:.0f} %" for t, n in prof.threads.most_common(6))
    )
    lines.append("self (top of stack):")
    lines += [f"  {n * 100 / total:5.1f} %  {f}" for f, n in prof.self_time.most_common(top)]
    lines.append(f"inclusive, {focus} frames:")
    inc = [(f, n) for f, n in prof.inclusive.most_common() if focus in f]
    lines += [f"  {n * 100 / total:5.1f} %  {f}" for f, n in inc[:top]]
    return "\n".join(lines) + "\n"


def _spy(py_spy: Path, out: Path, target: Sequence[str]) -> list[str]:
    return [
        str(py_spy),
        "record",
        "--format",
        "raw",
        "--rate",
        RATE,
        "--nolineno",
        "--threads",
        *EXTRA,
        "--output",
        str(out),
        *target,
    ]


def _profiled_run(
    ctx: Context, py_spy: Path, label: str, cmd: list[str], emu_pid: int, env: dict[str, str]
) -> str:
    folder = ctx.data_root / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    rf_out, emu_out = folder / f"{label}-rfbatch.txt", folder / f"{label}-emulator.txt"
    quiet_disk()
    emu_spy = subprocess.Popen(
        _spy(py_spy, emu_out, ["--pid", str(emu_pid)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach before the client starts
    started = time.perf_counter()
    with (
        (ctx.logs / f"profile-{label}.out").open("wb") as out,
        (ctx.logs / f"profile-{label}.err").open("wb") as err,
    ):
        subprocess.run(
            _spy(py_spy, rf_out, ["--subprocesses", "--", *cmd]),
            env=env,
            stdout=out,
            stderr=err,
            timeout=ctx.timeout,
            check=False,
        )
    wall = time.perf_counter() - started
    emu_spy.send_signal(signal.SIGINT)
    try:
        emu_spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        emu_spy.kill()
        emu_spy.wait(timeout=10)
    text = f"# {label}: wall {wall:.2f} s under py-spy\n"
    text += summary(f"{label} rfbatch", parse_raw(rf_out))
    text += summary(f"{label} emulator", parse_raw(emu_out), focus="rfbatch/emulator")
    return text


def profile_scenarios(ctx: Context, chosen: Sequence[Scenario], py_spy: Path) -> int:
    if not py_spy.exists():
        print(
            f"py-spy not found at {py_spy}; install it with:\n"
            f"  python3 -m venv {py_spy.parent.parent} && {py_spy.parent}/pip install py-spy",
            file=sys.stderr,
        )
        return 2
    reports = []
    for sc in chosen:
        data = ensure(sc.data, ctx.data_root, ctx.ref_python)
        state = ctx.work / "rfbatch-state"
        shutil.rmtree(state, ignore_errors=True)
        label = f"{sc.number}-{sc.key}"
        with emulator(ctx, f"emulator-profile-{sc.number}") as emu:
            env = clean_env(emu.env())
            if sc.kind == "export":
                batch = stage(ctx, emu, sc, data)
                out = ctx.work / "export-out"
                shutil.rmtree(out, ignore_errors=True)
                cmd = export_command(ctx, RF, batch, out)
                reports.append(_profiled_run(ctx, py_spy, label, cmd, emu.pid, env))
                shutil.rmtree(out, ignore_errors=True)
            else:
                warm(data)
                cmd = upload_command(ctx, RF, sc.kind, data.path, f"p{sc.number}")
                reports.append(_profiled_run(ctx, py_spy, label, cmd, emu.pid, env))
                if sc.kind == "tiny":
                    reports.append(_profiled_run(ctx, py_spy, f"{label}-noop", cmd, emu.pid, env))
        shutil.rmtree(state, ignore_errors=True)
    text = "\n".join(reports)
    (ctx.data_root / "profiles" / "summary.txt").write_text(text)
    print(text)
    return 0
