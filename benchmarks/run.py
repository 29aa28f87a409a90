"""rfbatch side by side with inference-cli and with the loopback ceiling.

    python benchmarks/run.py --reference benchmarks/.venv-ref/bin/inference [--quick]
        [--runs N] [--only 1,4] [--profile 1,5]

Starts the emulator as a separate process (``--store digests``) for every run, generates the
data sets once under ``benchmarks/data/`` (reused later), runs every scenario for each tool in
turn, and prints a table. A full run writes ``benchmarks/results/latest.json``; ``--quick``
(small data) writes ``benchmarks/data/results-quick.json`` instead, so a quick look never
replaces the full numbers. ``--profile`` runs rfbatch once per chosen scenario under py-spy
instead (see :mod:`harness.profiling`). Exit code 1 when a run failed or its check did not
pass; missed targets are reported, not failed.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import diskprobe, report
from harness.profiling import profile_scenarios
from harness.scenarios import (
    Context,
    RunRecord,
    Scenario,
    cpu_scenarios,
    run_scenario,
    scenarios,
    startup_cpu,
    tools_of,
)

import rfbatch

HERE = Path(__file__).resolve().parent


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="rfbatch benchmarks")
    p.add_argument(
        "--reference", default="", help="path to inference-cli's `inference` (none: left out)"
    )
    p.add_argument("--quick", action="store_true", help="small data sets (under 2 minutes)")
    p.add_argument(
        "--cpu", action="store_true", help="issue 14's CPU set: 10,000 images, upload and export"
    )
    p.add_argument("--runs", type=int, default=0, help="runs per tool and scenario (3; quick: 1)")
    p.add_argument("--only", default="", help="comma-separated scenario numbers (default: all)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per run (default 900/180)")
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--output", type=Path, default=None, help="where the JSON goes")
    p.add_argument("--profile", default="", help="profile rfbatch in these scenarios instead")
    p.add_argument("--no-ram", action="store_true", help="skip the exports' second pass into tmpfs")
    p.add_argument("--tls", action="store_true", help="the emulator serves HTTPS (its own CA)")
    p.add_argument(
        "--link", default="", help="a shaped link, e.g. rtt=40ms,conn=25MB/s,total=100MB/s"
    )
    return p.parse_args(argv)


def rfbatch_command() -> list[str]:
    script = Path(sys.executable).parent / "rfbatch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rfbatch"]


def compile_rfbatch() -> None:
    """Write rfbatch's bytecode, as installing a wheel does (pip did it for the reference).

    ``make`` installs rfbatch editable, and where PYTHONDONTWRITEBYTECODE is set (this machine
    sets it) Python would compile every module again at each start: ~0.2 s a run that no
    installed copy pays.
    """
    compileall.compile_dir(Path(rfbatch.__file__).parent, quiet=1)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_describe() -> str:
    """The commit the measured rfbatch was built from (``-dirty``: with uncommitted changes)."""
    try:
        return subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def machine(ref_python: str) -> dict[str, Any]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    ref_version = subprocess.run(
        [ref_python, "-c", "import importlib.metadata as m; print(m.version('inference-cli'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1e6, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rfbatch": importlib.metadata.version("rfbatch"),
        "inference_cli": ref_version,
    }


def ram_folder(need: int) -> Path | None:
    """A folder on tmpfs with room for ``need`` bytes twice over, or None."""
    mounted = any(
        line.split()[1:3] == ["/dev/shm", "tmpfs"]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.strip()
    )
    if not mounted or shutil.disk_usage("/dev/shm").free < 2 * need:
        return None
    return Path("/dev/shm") / f"rfbatch-bench-{os.getpid()}"


def titles_for(chosen: list[Scenario]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for s in chosen:
        titles[f"{s.number}-{s.key}"] = s.title
        titles[f"{s.number}r-{s.key}-ram"] = f"{s.title}, into tmpfs"
        if s.kind == "tiny":
            titles["6a-tiny-upload"] = f"{s.data.count:,} tiny files: upload"
            titles["6b-noop-rescan"] = f"{s.data.count:,} tiny files: no-op rerun"
    return titles


def show(r: RunRecord) -> None:
    state = "ok" if r.ok else f"FAILED: {r.note}"
    print(
        f"  {r.row:<28} {r.tool:<14} run {r.run}: {r.wall_s:7.2f} s  cpu {r.cpu_s:6.2f} s "
        f"(sys {r.sys_s:5.2f})  rss {r.peak_rss / 1e6:5.0f} MB  "
        f"emu cpu {r.emulator_cpu_s:5.2f} s  other cpu {r.other_cpu_s:5.2f} s  {state}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str]) -> int:
    args = parse(argv)
    started = time.monotonic()
    reference = str(Path(args.reference).resolve()) if args.reference else ""
    # Without the reference client its venv's OpenCV is missing too: no video data sets then.
    ref_python = str(Path(reference).parent / "python") if reference else sys.executable
    work = args.data_dir / "work"
    ctx = Context(
        root=HERE,
        data_root=args.data_dir,
        work=work,
        logs=work / "logs",
        rfbatch=rfbatch_command(),
        reference=reference,
        ref_python=ref_python,
        python=sys.executable,
        timeout=args.timeout or (180.0 if args.quick else 900.0),
        runs=args.runs or (1 if args.quick else 3),
        on_record=show,
        emulator_args=(
            *(["--tls"] if args.tls else []),
            *(["--link", args.link] if args.link else []),
        ),
    )
    ctx.logs.mkdir(parents=True, exist_ok=True)
    compile_rfbatch()
    everything = cpu_scenarios() if args.cpu else scenarios(args.quick)
    if args.profile:
        wanted = [s for s in everything if s.number in args.profile.split(",")]
        return profile_scenarios(ctx, wanted, HERE / ".venv-prof" / "bin" / "py-spy")
    chosen = [s for s in everything if not args.only or s.number in args.only.split(",")]
    exported = [s.data.count * getattr(s.data, "size", 0) for s in chosen if s.kind == "export"]
    ctx.ram_dir = None if args.no_ram else ram_folder(max(exported, default=0))
    load_before = os.getloadavg()
    # Others may commit while a long run goes on: the source is named at both ends.
    source_before = _git_describe()
    disk = diskprobe.probe(work)
    print(f"disk under {work}: {disk}", file=sys.stderr, flush=True)
    tools = sorted({t for sc in chosen for t in tools_of(ctx, sc)})
    startup = startup_cpu(ctx, tools)
    print(report.startup_text(startup), file=sys.stderr, flush=True)
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    # The disk is shared with whatever else runs on the machine: probed again per scenario.
    disk_by_scenario: dict[str, dict[str, float]] = {}
    try:
        for sc in chosen:
            t0 = time.monotonic()
            disk_by_scenario[sc.number] = diskprobe.probe(work)
            try:
                run_scenario(ctx, sc)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                # One broken scenario (a failed staging upload, a data set that cannot be made)
                # must not cost the numbers of the others.
                errors[sc.number] = f"{type(exc).__name__}: {exc}"
                print(f"scenario {sc.number} FAILED: {errors[sc.number]}", file=sys.stderr)
            seconds[sc.number] = round(time.monotonic() - t0, 1)
    finally:
        if ctx.ram_dir is not None:
            shutil.rmtree(ctx.ram_dir, ignore_errors=True)
    rows = report.build_rows(ctx.records, titles_for(chosen), startup)
    found = report.targets(rows)
    total = time.monotonic() - started
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "runs_per_tool": ctx.runs,
        "machine": machine(ref_python),
        "rfbatch_source": {"before": source_before, "after": _git_describe()},
        "disk": disk,
        "disk_per_scenario": disk_by_scenario,
        "export_ram_dir": str(ctx.ram_dir) if ctx.ram_dir else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_total": round(total, 1),
        "seconds_per_scenario": seconds,
        "scenario_errors": errors,
        "command": " ".join(["benchmarks/run.py", *argv]),
        "emulator_args": list(ctx.emulator_args),
        "startup_cpu_s": {tool: round(cpu, 3) for tool, cpu in startup.items()},
    }
    wan = args.tls or args.link
    if args.output is not None:
        output = args.output
    elif args.cpu:
        output = HERE / "results" / f"cpu-{datetime.now(UTC):%Y%m%d%H%M%S}.json"
    elif wan:
        output = args.data_dir / f"results-wan{'-quick' if args.quick else ''}.json"
    elif args.only:
        output = args.data_dir / "results-partial.json"
    elif args.quick:
        output = args.data_dir / "results-quick.json"
    else:
        output = HERE / "results" / "latest.json"
    report.write_json(output, meta, rows, found, ctx.records)
    print(report.table(rows))
    print()
    print(report.startup_text(startup))
    print()
    print(report.targets_text(found))
    print(f"\n{len(ctx.records)} runs in {total:.0f} s; results in {output}")
    return 0 if all(r.ok for r in ctx.records) and not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
