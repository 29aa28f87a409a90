"""CPU seconds per GB uploaded: two rfbatch trees side by side, start-up counted apart.

    .venv/bin/python benchmarks/upload_cpu.py --tree old=/path/a/src --tree new=/path/b/src \
        [--runs 3] [--files 10000] [--tiny] [--tls] [--link rtt=40ms,conn=25MB/s,total=100MB/s]
        [--set new:RFBATCH_UPLOAD__CHUNK_BYTES=1048576] [--profile new]

Each run uploads the same data set (``images-<files/1000>k``, 20-200 KB PNGs, made once under
``benchmarks/data/``) into a fresh emulator (``--store digests``, its own code the same for
every run: the one this script imports) with a fresh state dir, and measures rfbatch's own CPU
(user + system from its rusage) and its peak RSS. Start-up is measured the same way, apart:
``rfbatch upload --help`` (imports and the parser) and an upload of an empty folder (imports,
settings, manifest open, batch seal: everything a run pays that does not grow with the data).
The trees alternate run by run (old, new / new, old / ...) so a slow spell of the shared machine
does not land on one; the medians are printed. A run counts only if the emulator holds every
file with the right total size. ``--tiny`` uploads as many ~200-byte PNGs instead (``tiny-<n>k``):
what a file costs apart from its bytes. ``--tls`` and ``--link`` put the emulator behind HTTPS
and a shaped link (see ``run.py``), for the WAN profile's peak RSS. ``--profile TREE`` runs that
tree once under py-spy instead (``--py-spy``), and prints where the samples fall.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.datasets import Dataset, ImageSet, ensure, warm
from harness.emu import Emulator
from harness.proctree import measure
from harness.profiling import parse_raw, summary
from harness.scenarios import clean_env, quiet_disk

HERE = Path(__file__).resolve().parent
GB = 1e9


@dataclass
class Sample:
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss: int


def _command(args: argparse.Namespace, *rest: str) -> list[str]:
    return [args.python, "-m", "rfbatch", *rest]


def _env(src: str, emu: Emulator | None, settings: dict[str, str] | None = None) -> dict[str, str]:
    extra = {"PYTHONPATH": src, "ROBOFLOW_API_KEY": "bench-key", **(settings or {})}
    if emu is not None:
        extra.update(emu.env())
    return clean_env(extra)


def _run(
    args: argparse.Namespace, name: str, source: Path, label: str, expect: Dataset | None
) -> Sample:
    src = args.trees[name]
    work = args.work
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    batch = f"cpu-{label}"
    with Emulator(
        args.python, work / "emulator", work / "logs", "bench-key", label, args.emulator_args
    ) as emu:
        cmd = _command(args, "upload", str(source), "--batch", batch, "--state-dir", str(state))
        quiet_disk()
        m = measure(
            [*cmd, "--json"],
            env=_env(src, emu, args.settings.get(name)),
            stdout=work / "logs" / f"{label}.out",
            stderr=work / "logs" / f"{label}.err",
            timeout=args.timeout,
            emulator_pid=emu.pid,
        )
        if m.returncode != 0 or m.timed_out:
            raise SystemExit(f"{label}: exit {m.returncode}; see {work}/logs/{label}.err")
        if expect is not None:
            emu.wait_count(batch, expect.files, timeout=60)
            held = emu.batch_summary(batch)
            if held != (expect.files, expect.bytes):
                raise SystemExit(f"{label}: emulator holds {held}, not all of {expect.path}")
    shutil.rmtree(state, ignore_errors=True)
    return Sample(m.cpu_s, m.user_s, m.sys_s, m.peak_rss)


def _help(args: argparse.Namespace, src: str) -> float:
    before = os.times()
    subprocess.run(
        _command(args, "upload", "--help"),
        env=_env(src, None),
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def _profile(args: argparse.Namespace, src: str, data: Dataset) -> None:
    out = args.work / "profile.txt"
    state = args.work / "state"
    shutil.rmtree(state, ignore_errors=True)
    with Emulator(
        args.python,
        args.work / "emulator",
        args.work / "logs",
        "bench-key",
        "emulator",
        args.emulator_args,
    ) as emu:
        cmd = _command(args, "upload", str(data.path), "--batch", "prof", "--state-dir", str(state))
        spy = [str(args.py_spy), "record", "--format", "raw", "--rate", "200", "--nolineno"]
        subprocess.run(
            [*spy, "--threads", "--gil", "--output", str(out), "--", *cmd],
            env=_env(src, emu),
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=args.timeout,
        )
    print(summary("upload", parse_raw(out), top=args.top))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, help="NAME=SRC (a src folder)")
    p.add_argument("--set", action="append", default=[], help="NAME:VARIABLE=VALUE for a tree")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--tiny", action="store_true", help="~200-byte files: the cost per file")
    p.add_argument("--tls", action="store_true", help="the emulator serves HTTPS (its own CA)")
    p.add_argument("--link", default="", help="a shaped link, e.g. rtt=40ms,conn=25MB/s")
    p.add_argument("--profile", default="", help="profile this tree under py-spy instead")
    p.add_argument("--py-spy", type=Path, default=HERE / ".venv-prof" / "bin" / "py-spy")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    args.trees = trees
    args.settings = {}
    for item in args.set:
        name, _, assignment = item.partition(":")
        variable, _, value = assignment.partition("=")
        args.settings.setdefault(name, {})[variable] = value
    for src in trees.values():
        # Bytecode written once, as an installed wheel has it (see run.compile_rfbatch).
        compileall.compile_dir(Path(src) / "rfbatch", quiet=1)
    args.emulator_args = (
        *(["--tls"] if args.tls else []),
        *(["--link", args.link] if args.link else []),
    )
    if args.tiny:
        spec = ImageSet(f"tiny-{args.files // 1000}k", args.files, 0, 0, 6)
    else:
        spec = ImageSet(f"images-{args.files // 1000}k", args.files, 20_000, 200_000, 1)
    data = ensure(spec, args.data_dir, args.python)
    with tempfile.TemporaryDirectory(prefix="upload-cpu-") as tmp:
        args.work = Path(tmp)
        empty = args.work / "empty"
        empty.mkdir()
        if args.profile:
            warm(data)
            _profile(args, trees[args.profile], data)
            return 0
        names = list(trees)
        runs: dict[str, list[Sample]] = {n: [] for n in names}
        idle: dict[str, list[Sample]] = {n: [] for n in names}
        helps: dict[str, list[float]] = {n: [] for n in names}
        for run in range(args.runs):
            order = names if run % 2 == 0 else names[::-1]
            for name in order:
                helps[name].append(_help(args, trees[name]))
                idle[name].append(_run(args, name, empty, f"{name}-idle-{run}", None))
                warm(data)
                sample = _run(args, name, data.path, f"{name}-{run}", data)
                runs[name].append(sample)
                print(
                    f"{name} run {run}: {sample.cpu_s:.2f} CPU-s "
                    f"(user {sample.user_s:.2f}, sys {sample.sys_s:.2f}), "
                    f"peak RSS {sample.peak_rss / 1e6:.0f} MB; "
                    f"empty upload {idle[name][-1].cpu_s:.2f} s, --help {helps[name][-1]:.2f} s",
                    flush=True,
                )
    gb = data.bytes / GB
    print(f"\n{data.files:,} files, {gb:.3f} GB; medians of {args.runs} runs")
    print(
        f"{'tree':<8}{'CPU s':>8}{'empty':>8}{'--help':>8}"
        f"{'s/GB (-empty)':>15}{'s/GB (-help)':>14}{'ms/file':>9}{'RSS MB':>8}"
    )
    for name in names:
        cpu = statistics.median(s.cpu_s for s in runs[name])
        empty_cpu = statistics.median(s.cpu_s for s in idle[name])
        help_cpu = statistics.median(helps[name])
        rss = max(s.peak_rss for s in runs[name]) / 1e6
        print(
            f"{name:<8}{cpu:>8.2f}{empty_cpu:>8.2f}{help_cpu:>8.2f}"
            f"{(cpu - empty_cpu) / gb:>15.2f}{(cpu - help_cpu) / gb:>14.2f}"
            f"{(cpu - empty_cpu) * 1000 / data.files:>9.3f}{rss:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
