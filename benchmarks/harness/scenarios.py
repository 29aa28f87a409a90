"""The scenarios, what each tool runs in them, and the checks that each run did the work.

Upload scenarios (1, 2, 3, 6a) give every run a fresh emulator, so no run pays for what an
earlier one left in it. Export scenarios (4, 5) stage their batch once per scenario with an
untimed ``rfbatch upload``, then every run exports that same batch into an empty folder. Runs
alternate between the tools, in a rotating order, so a slow spell of the machine does not land
on one tool. A run counts only if its exit code is 0 *and* the bytes really moved: the emulator
holds every file of the batch with the right total size, or the export folder holds every file
with the right total size.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from harness.datasets import Dataset, DataSpec, ImageSet, VideoSet, ensure, warm
from harness.emu import Emulator
from harness.proctree import Measurement, measure

MiB = 1024 * 1024
REF = "inference-cli"
RF = "rfbatch"
CEIL = "ceiling"
CEILING_SCRIPT = Path(__file__).with_name("ceiling.py")
# What the ceiling client runs with: enough in flight to saturate the emulator on two cores.
CEILING_PUT_CONCURRENCY = 4
CEILING_GET_CONCURRENCY = 32

Kind = Literal["images", "videos", "export", "tiny"]


@dataclass(frozen=True)
class Scenario:
    number: str
    key: str
    title: str
    kind: Kind
    data: DataSpec
    tools: tuple[str, ...]


def cpu_scenarios() -> list[Scenario]:
    """Issue 14's CPU-cost set: 10,000 images of 20-200 KB uploaded, then exported."""
    images = ImageSet("images-10k", 10_000, 20_000, 200_000, 1)
    title = f"{images.count:,} images of 20-200 KB"
    return [
        Scenario("1", "small-images", title, "images", images, (REF, RF, CEIL)),
        Scenario("4", "export-small", f"export of {title}", "export", images, (REF, RF, CEIL)),
    ]


def scenarios(quick: bool) -> list[Scenario]:
    """The six scenarios (the ceiling, 7, runs inside 1 to 5); ``quick`` shrinks the data."""
    q = quick
    small = ImageSet(
        "quick-images-2k" if q else "images-20k", 2_000 if q else 20_000, 20_000, 200_000, 1
    )
    large = ImageSet(
        "quick-images-20-large" if q else "images-200-large",
        20 if q else 200,
        5_000_000,
        20_000_000,
        2,
    )
    videos = VideoSet(
        "quick-videos-2x64m" if q else "videos-8x256m", 2 if q else 8, (64 if q else 256) * MiB, 3
    )
    big = VideoSet(
        "quick-videos-4x64m" if q else "videos-40x100m", 4 if q else 40, (64 if q else 100) * MiB, 5
    )
    tiny = ImageSet(
        "quick-tiny-20k" if q else "tiny-200k", 20_000 if q else 200_000, 0, 0, 6, per_dir=1000
    )
    all3 = (REF, RF, CEIL)
    n_small = f"{small.count:,}"
    return [
        Scenario("1", "small-images", f"{n_small} images of 20-200 KB", "images", small, all3),
        Scenario("2", "large-images", f"{large.count} images of 5-20 MB", "images", large, all3),
        Scenario(
            "3",
            "videos",
            f"{videos.count} videos of {videos.size // MiB} MiB",
            "videos",
            videos,
            all3,
        ),
        Scenario(
            "4", "export-small", f"export of {n_small} files (many pages)", "export", small, all3
        ),
        Scenario(
            "5",
            "export-large",
            f"export of {big.count} files of {big.size // MiB} MiB",
            "export",
            big,
            all3,
        ),
        Scenario(
            "6", "tiny", f"{tiny.count:,} tiny files, then a no-op rerun", "tiny", tiny, (RF,)
        ),
    ]


@dataclass
class RunRecord:
    row: str
    tool: str
    run: int
    ok: bool
    wall_s: float
    process_wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    context_switches: int
    peak_rss: int
    peak_pss: int
    max_procs: int
    emulator_cpu_s: float
    other_cpu_s: float
    files: int
    bytes: int
    note: str = ""
    # rfbatch's own "seconds" from its --json summary: the work without interpreter start-up,
    # imports and opening the manifest.
    inner_s: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Context:
    root: Path
    data_root: Path
    work: Path
    logs: Path
    rfbatch: list[str]
    reference: str
    ref_python: str
    python: str
    timeout: float
    runs: int
    # A tmpfs folder: exports run a second time into RAM, to tell the client's costs apart from
    # the disk's (file creation on this VM's disk costs about a millisecond).
    ram_dir: Path | None = None
    key: str = "bench-key"
    # Flags for every emulator of the run: the WAN profile (--tls, --link ...).
    emulator_args: tuple[str, ...] = ()
    records: list[RunRecord] = field(default_factory=list)
    on_record: Callable[[RunRecord], None] | None = None

    def add(self, record: RunRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment without any rfbatch or Roboflow settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RFBATCH_", "ROBOFLOW_")) and k != "API_BASE_URL"
    }
    return {**env, **extra}


def quiet_disk() -> None:
    """Flush dirty pages so one run never pays for the writes of the one before."""
    os.sync()


@contextmanager
def emulator(ctx: Context, name: str) -> Iterator[Emulator]:
    state = ctx.work / "emulator-state"
    with Emulator(ctx.python, state, ctx.logs, ctx.key, name, ctx.emulator_args) as emu:
        yield emu


def _record(
    row: str, tool: str, run: int, m: Measurement, files: int, nbytes: int, ok: bool, note: str
) -> RunRecord:
    if m.timed_out:
        ok, note = False, f"timed out; {note}"
    elif m.returncode != 0:
        ok, note = False, f"exit code {m.returncode}; {note}"
    return RunRecord(
        row=row,
        tool=tool,
        run=run,
        ok=ok,
        wall_s=m.wall_s,
        process_wall_s=m.wall_s,
        cpu_s=m.cpu_s,
        user_s=m.user_s,
        sys_s=m.sys_s,
        context_switches=m.voluntary_switches + m.involuntary_switches,
        peak_rss=m.peak_rss,
        peak_pss=m.peak_pss,
        max_procs=m.max_procs,
        emulator_cpu_s=m.emulator_cpu_s,
        other_cpu_s=m.other_cpu_s,
        files=files,
        bytes=nbytes,
        note=note,
    )


def _ceiling_seconds(stdout: Path) -> tuple[float, dict[str, float]]:
    lines = stdout.read_text().strip().splitlines()
    if not lines:
        return 0.0, {}
    result: dict[str, float] = json.loads(lines[-1])
    return float(result["seconds"]), result


def _measure(ctx: Context, label: str, cmd: list[str], emu: Emulator) -> tuple[Measurement, Path]:
    quiet_disk()
    out = ctx.logs / f"{label}.out"
    m = measure(
        cmd,
        env=clean_env(emu.env()),
        stdout=out,
        stderr=ctx.logs / f"{label}.err",
        timeout=ctx.timeout,
        emulator_pid=emu.pid,
    )
    return m, out


# --- uploads (1, 2, 3) -------------------------------------------------------------------------


def upload_command(ctx: Context, tool: str, kind: Kind, source: Path, batch: str) -> list[str]:
    if tool == RF:
        state = ctx.work / "rfbatch-state"
        return [
            *ctx.rfbatch,
            "upload",
            str(source),
            "--batch",
            batch,
            "--state-dir",
            str(state),
            "--json",
        ]
    if tool == REF:
        what, flag = ("images", "--images-dir") if kind != "videos" else ("videos", "--videos-dir")
        return [
            ctx.reference,
            "rf-cloud",
            "data-staging",
            f"create-batch-of-{what}",
            flag,
            str(source),
            "--batch-id",
            batch,
        ]
    mode = "videos" if kind == "videos" else "shards"
    return [
        ctx.python,
        str(CEILING_SCRIPT),
        mode,
        "--source",
        str(source),
        "--batch",
        batch,
        "--concurrency",
        str(CEILING_PUT_CONCURRENCY),
        "--timeout",
        str(ctx.timeout),
    ]


def upload_run(ctx: Context, sc: Scenario, data: Dataset, tool: str, run: int) -> RunRecord:
    row = f"{sc.number}-{sc.key}"
    batch = f"b{sc.number}-{tool.split('-')[0]}-{run}"
    # rfbatch never mixes kinds in a batch: videos go to <batch>-videos.
    stored_in = f"{batch}-videos" if (tool == RF and sc.kind == "videos") else batch
    shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
    with emulator(ctx, f"emulator-{row}-{tool}-{run}") as emu:
        warm(data)
        m, out = _measure(
            ctx, f"{row}-{tool}-{run}", upload_command(ctx, tool, sc.kind, data.path, batch), emu
        )
        # The reference client keeps its resume log inside the source folder.
        (data.path / f".import_log-{batch}").unlink(missing_ok=True)
        count = emu.wait_count(stored_in, data.files, timeout=60)
        items, nbytes = emu.batch_summary(stored_in)
    shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
    ok = count == data.files and items == data.files and nbytes == data.bytes
    note = "" if ok else f"emulator holds {items}/{data.files} files, {nbytes}/{data.bytes} bytes"
    record = _record(row, tool, run, m, data.files, data.bytes, ok, note)
    if tool == CEIL:
        record.wall_s, _ = _ceiling_seconds(out)
    elif tool == RF:
        record.inner_s = _inner_seconds(out)
    return record


# --- exports (4, 5) -----------------------------------------------------------------------------


def stage(ctx: Context, emu: Emulator, sc: Scenario, data: Dataset) -> str:
    """Upload the data set (untimed, with rfbatch) and return the batch to export."""
    state = ctx.work / "stage-state"
    shutil.rmtree(state, ignore_errors=True)
    cmd = [
        *ctx.rfbatch,
        "upload",
        str(data.path),
        "--batch",
        f"src{sc.number}",
        "--state-dir",
        str(state),
        "--json",
    ]
    with (
        (ctx.logs / f"stage-{sc.number}.out").open("wb") as out,
        (ctx.logs / f"stage-{sc.number}.err").open("wb") as err,
    ):
        subprocess.run(
            cmd, env=clean_env(emu.env()), stdout=out, stderr=err, check=True, timeout=ctx.timeout
        )
    shutil.rmtree(state, ignore_errors=True)
    batch = f"src{sc.number}-videos" if isinstance(data.spec, VideoSet) else f"src{sc.number}"
    items, nbytes = emu.batch_summary(batch)
    if items != data.files or nbytes != data.bytes:
        raise RuntimeError(f"staging {batch}: emulator holds {items} files, {nbytes} bytes")
    return batch


def export_command(ctx: Context, tool: str, batch: str, out: Path) -> list[str]:
    if tool == RF:
        state = ctx.work / "rfbatch-state"
        return [*ctx.rfbatch, "export", batch, "-o", str(out), "--state-dir", str(state), "--json"]
    if tool == REF:
        return [
            ctx.reference,
            "rf-cloud",
            "data-staging",
            "export-batch",
            "--batch-id",
            batch,
            "--target-dir",
            str(out),
        ]
    return [
        ctx.python,
        str(CEILING_SCRIPT),
        "export",
        "--batch",
        batch,
        "--concurrency",
        str(CEILING_GET_CONCURRENCY),
        "--timeout",
        str(ctx.timeout),
    ]


def tree_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``, leaving out hidden files (the reference's export log)."""
    files = nbytes = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                files += 1
                nbytes += (Path(root) / name).stat().st_size
    return files, nbytes


def export_row(sc: Scenario, target: str) -> str:
    return f"{sc.number}-{sc.key}" if target == "disk" else f"{sc.number}r-{sc.key}-ram"


def export_run(
    ctx: Context,
    sc: Scenario,
    data: Dataset,
    emu: Emulator,
    batch: str,
    tool: str,
    run: int,
    target: str,
) -> RunRecord:
    row = export_row(sc, target)
    base = ctx.ram_dir if (target == "ram" and ctx.ram_dir is not None) else ctx.work
    out = base / "export-out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
    m, stdout = _measure(ctx, f"{row}-{tool}-{run}", export_command(ctx, tool, batch, out), emu)
    if tool == CEIL:
        seconds, result = _ceiling_seconds(stdout)
        files, nbytes = int(result.get("files", 0)), int(result.get("bytes", 0))
    else:
        files, nbytes = tree_size(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
    ok = files == data.files and nbytes == data.bytes
    note = "" if ok else f"got {files}/{data.files} files, {nbytes}/{data.bytes} bytes"
    record = _record(row, tool, run, m, data.files, data.bytes, ok, note)
    if tool == CEIL:
        record.wall_s = seconds
    elif tool == RF:
        record.inner_s = _inner_seconds(stdout)
    return record


# --- rfbatch alone: many tiny files, then a rerun (6) --------------------------------------------


def tiny_runs(ctx: Context, sc: Scenario, data: Dataset, run: int) -> list[RunRecord]:
    state = ctx.work / "rfbatch-state"
    shutil.rmtree(state, ignore_errors=True)
    batch = f"b6-rf-{run}"
    cmd = [
        *ctx.rfbatch,
        "upload",
        str(data.path),
        "--batch",
        batch,
        "--state-dir",
        str(state),
        "--json",
    ]
    out: list[RunRecord] = []
    with emulator(ctx, f"emulator-6-{run}") as emu:
        warm(data)
        m, stdout = _measure(ctx, f"6a-tiny-upload-rfbatch-{run}", cmd, emu)
        items, nbytes = emu.batch_summary(batch)
        ok = items == data.files and nbytes == data.bytes
        note = "" if ok else f"emulator holds {items}/{data.files} files"
        first = _record("6a-tiny-upload", RF, run, m, data.files, data.bytes, ok, note)
        first.inner_s = _inner_seconds(stdout)
        out.append(first)
        m, stdout = _measure(ctx, f"6b-noop-rescan-rfbatch-{run}", cmd, emu)
        summary = _json_or_empty(stdout)
        sent = summary.get("files_sent")
        unchanged = summary.get("files_unchanged")
        items_after, _ = emu.batch_summary(batch)
        ok = sent == 0 and unchanged == data.files and items_after == data.files
        note = "" if ok else f"rerun sent {sent}, unchanged {unchanged}, emulator {items_after}"
        again = _record("6b-noop-rescan", RF, run, m, data.files, 0, ok, note)
        again.inner_s = _inner_seconds(stdout)
        out.append(again)
    shutil.rmtree(state, ignore_errors=True)
    return out


def _inner_seconds(stdout: Path) -> float | None:
    value = _json_or_empty(stdout).get("seconds")
    return float(value) if isinstance(value, int | float) else None


def _json_or_empty(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- driving a scenario ---------------------------------------------------------------------------


def rotated(tools: tuple[str, ...], run: int) -> list[str]:
    k = run % len(tools)
    return list(tools[k:] + tools[:k])


def tools_of(ctx: Context, sc: Scenario) -> tuple[str, ...]:
    """The scenario's tools, without the reference client when none was given."""
    return tuple(t for t in sc.tools if t != REF or ctx.reference)


def startup_cpu(ctx: Context, tools: Sequence[str], runs: int = 5) -> dict[str, float]:
    """Each tool's start-up: the median CPU seconds of its upload command given an empty folder.

    Interpreter start-up, imports, configuration and (for rfbatch) opening the manifest: what
    every command pays before its first file, counted apart so the per-GB and per-file figures
    are the work's alone. Exit codes are not checked (a tool may refuse an empty folder; it has
    paid its start-up by then).
    """
    empty = ctx.work / "empty-source"
    empty.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[float]] = {tool: [] for tool in tools}
    with emulator(ctx, "emulator-startup") as emu:
        for run in range(runs):
            for tool in rotated(tuple(tools), run):
                shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
                cmd = upload_command(ctx, tool, "images", empty, f"startup-{run}")
                m, _ = _measure(ctx, f"startup-{tool}-{run}", cmd, emu)
                samples[tool].append(m.cpu_s)
    shutil.rmtree(ctx.work / "rfbatch-state", ignore_errors=True)
    return {tool: statistics.median(values) for tool, values in samples.items()}


def run_scenario(ctx: Context, sc: Scenario) -> None:
    started = time.monotonic()
    data = ensure(sc.data, ctx.data_root, ctx.ref_python)
    print(
        f"scenario {sc.number}: {sc.title} ({data.files} files, {data.bytes / 1e6:.0f} MB)",
        file=sys.stderr,
        flush=True,
    )
    if sc.kind == "tiny":
        for run in range(ctx.runs):
            for record in tiny_runs(ctx, sc, data, run):
                ctx.add(record)
    elif sc.kind == "export":
        with emulator(ctx, f"emulator-{sc.number}") as emu:
            batch = stage(ctx, emu, sc, data)
            targets = ["disk", "ram"] if ctx.ram_dir is not None else ["disk"]
            for run in range(ctx.runs):
                for target in targets:
                    for tool in rotated(tools_of(ctx, sc), run):
                        ctx.add(export_run(ctx, sc, data, emu, batch, tool, run, target))
    else:
        for run in range(ctx.runs):
            for tool in rotated(tools_of(ctx, sc), run):
                ctx.add(upload_run(ctx, sc, data, tool, run))
    print(
        f"scenario {sc.number} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
    )
