"""Medians, ratios, targets; the table and ``results/latest.json``.

Per row and tool: the median wall time of the successful runs, files/s and MB/s computed from it
(MB = 10^6 bytes of file content, the same for every tool), the median CPU seconds of the tool's
whole process tree, and the highest peak RSS of the tree over the runs (the worst case, not the
median). Ratios compare throughputs: ``vs inference-cli`` = inference-cli's wall / rfbatch's
wall, ``vs ceiling`` = the ceiling's timed part / rfbatch's wall, and the in-process ratio = the
ceiling's timed part / the ``seconds`` rfbatch reports itself (its work without interpreter
start-up and imports).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.scenarios import CEIL, REF, RF, RunRecord

MB = 1_000_000


@dataclass(frozen=True)
class ToolSummary:
    tool: str
    runs: int
    ok_runs: int
    walls: list[float]
    notes: list[str]
    wall_s: float | None = None
    files_per_s: float | None = None
    mb_per_s: float | None = None
    cpu_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    context_switches: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    emulator_cpu_s: float | None = None
    other_cpu_s: float | None = None
    inner_s: float | None = None
    # The tool's start-up CPU (see ``scenarios.startup_cpu``), and the work's CPU without it
    # per GB of file content and per file.
    startup_cpu_s: float | None = None
    cpu_s_per_gb: float | None = None
    cpu_ms_per_file: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "ok_runs": self.ok_runs,
            "median_wall_s": _r(self.wall_s, 3),
            "files_per_s": _r(self.files_per_s, 1),
            "mb_per_s": _r(self.mb_per_s, 1),
            "cpu_s": _r(self.cpu_s, 2),
            "user_s": _r(self.user_s, 2),
            "sys_s": _r(self.sys_s, 2),
            "context_switches": _r(self.context_switches, 0),
            "peak_rss_mb": _r(self.peak_rss_mb, 1),
            "peak_pss_mb": _r(self.peak_pss_mb, 1),
            "emulator_cpu_s": _r(self.emulator_cpu_s, 2),
            "other_cpu_s": _r(self.other_cpu_s, 2),
            "median_in_process_s": _r(self.inner_s, 3),
            "startup_cpu_s": _r(self.startup_cpu_s, 3),
            "cpu_s_per_gb": _r(self.cpu_s_per_gb, 3),
            "cpu_ms_per_file": _r(self.cpu_ms_per_file, 3),
            "walls_s": [round(w, 3) for w in self.walls],
            "notes": self.notes,
        }


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarise(
    tool: str, records: Sequence[RunRecord], startup_cpu_s: float | None = None
) -> ToolSummary:
    ok = [r for r in records if r.ok]
    notes = [f"run {r.run}: {r.note}" for r in records if not r.ok or r.note]
    walls = [r.wall_s for r in records]
    if not ok:
        return ToolSummary(tool, len(records), 0, walls, notes)
    wall = statistics.median(r.wall_s for r in ok)
    files, nbytes = ok[0].files, ok[0].bytes
    cpu = statistics.median(r.cpu_s for r in ok)
    work_cpu = None if startup_cpu_s is None else max(cpu - startup_cpu_s, 0.0)
    return ToolSummary(
        tool=tool,
        runs=len(records),
        ok_runs=len(ok),
        walls=walls,
        notes=notes,
        wall_s=wall,
        files_per_s=files / wall if wall > 0 else None,
        mb_per_s=nbytes / MB / wall if wall > 0 and nbytes else None,
        cpu_s=cpu,
        user_s=statistics.median(r.user_s for r in ok),
        sys_s=statistics.median(r.sys_s for r in ok),
        context_switches=statistics.median(r.context_switches for r in ok),
        peak_rss_mb=max(r.peak_rss for r in ok) / MB,
        peak_pss_mb=max(r.peak_pss for r in ok) / MB,
        emulator_cpu_s=statistics.median(r.emulator_cpu_s for r in ok),
        other_cpu_s=statistics.median(r.other_cpu_s for r in ok),
        inner_s=_median_or_none([r.inner_s for r in ok]),
        startup_cpu_s=startup_cpu_s,
        cpu_s_per_gb=work_cpu / (nbytes / 1e9) if work_cpu is not None and nbytes else None,
        cpu_ms_per_file=work_cpu * 1000 / files if work_cpu is not None and files else None,
    )


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    files: int
    tools: dict[str, ToolSummary]

    def ratio(self, other: str) -> float | None:
        mine, theirs = self.tools.get(RF), self.tools.get(other)
        if mine is None or theirs is None or not mine.wall_s or not theirs.wall_s:
            return None
        return theirs.wall_s / mine.wall_s

    def inner_ratio(self) -> float | None:
        """rfbatch's in-process time (no start-up) against the ceiling's timed part."""
        mine, ceiling = self.tools.get(RF), self.tools.get(CEIL)
        if mine is None or ceiling is None or not mine.inner_s or not ceiling.wall_s:
            return None
        return ceiling.wall_s / mine.inner_s


def build_rows(
    records: Sequence[RunRecord],
    titles: dict[str, str],
    startup: Mapping[str, float] | None = None,
) -> list[Row]:
    keys: list[str] = []
    for r in records:
        if r.row not in keys:
            keys.append(r.row)
    rows = []
    for key in keys:
        mine = [r for r in records if r.row == key]
        tools: dict[str, ToolSummary] = {}
        for tool in (REF, RF, CEIL):
            recs = [r for r in mine if r.tool == tool]
            if recs:
                tools[tool] = summarise(tool, recs, (startup or {}).get(tool))
        rows.append(Row(key, titles.get(key, key), mine[0].files, tools))
    return rows


# --- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool | None

    def to_json(self) -> dict[str, Any]:
        return {"target": self.name, "measured": self.measured, "met": self.met}


def _find(rows: Sequence[Row], prefix: str) -> Row | None:
    return next((r for r in rows if r.key.startswith(prefix)), None)


def _ratio_target(rows: Sequence[Row], prefix: str, other: str, floor: float, label: str) -> Target:
    row = _find(rows, prefix)
    value = row.ratio(other) if row else None
    if value is None:
        return Target(label, "not measured", None)
    shown = f"{value:.2f}x" if other == REF else f"{value * 100:.0f} %"
    return Target(label, shown, value >= floor)


def targets(rows: Sequence[Row]) -> list[Target]:
    out = [
        _ratio_target(rows, "1-", REF, 5.0, "1 small images: >= 5x inference-cli"),
        _ratio_target(rows, "1-", CEIL, 0.9, "1 small images: >= 90 % of ceiling"),
        _ratio_target(rows, "3-", REF, 3.0, "3 videos: >= 3x inference-cli"),
        _ratio_target(rows, "4-", REF, 5.0, "4 export small: >= 5x inference-cli"),
        _ratio_target(rows, "4-", CEIL, 0.9, "4 export small: >= 90 % of ceiling"),
        _ratio_target(rows, "5-", REF, 5.0, "5 export large: >= 5x inference-cli"),
        _ratio_target(rows, "5-", CEIL, 0.9, "5 export large: >= 90 % of ceiling"),
        _ratio_target(rows, "4r-", REF, 5.0, "4 export small into tmpfs: >= 5x inference-cli"),
        _ratio_target(rows, "4r-", CEIL, 0.9, "4 export small into tmpfs: >= 90 % of ceiling"),
        _ratio_target(rows, "5r-", REF, 5.0, "5 export large into tmpfs: >= 5x inference-cli"),
        _ratio_target(rows, "5r-", CEIL, 0.9, "5 export large into tmpfs: >= 90 % of ceiling"),
    ]
    out = [t for t in out if t.met is not None or "tmpfs" not in t.name]
    for row in rows:
        rf = row.tools.get(RF)
        if rf is not None and rf.peak_rss_mb is not None:
            out.append(
                Target(
                    f"{row.key}: rfbatch peak RSS <= 100 MB",
                    f"{rf.peak_rss_mb:.0f} MB",
                    rf.peak_rss_mb <= 100,
                )
            )
    few, many = _find(rows, "1-"), _find(rows, "6a-")
    if few and many and RF in few.tools and RF in many.tools:
        a, b = few.tools[RF].peak_rss_mb, many.tools[RF].peak_rss_mb
        if a is not None and b is not None:
            out.append(
                Target(
                    "peak RSS flat as file count grows (growth <= 10 MB)",
                    f"{a:.0f} MB at {few.files:,} files -> {b:.0f} MB at {many.files:,} files",
                    b - a <= 10,
                )
            )
    out.extend(_cpu_targets(rows))
    noop = _find(rows, "6b-")
    wall = noop.tools[RF].wall_s if noop and RF in noop.tools else None
    if wall is not None:
        out.append(Target("6 no-op rescan <= 5 s", f"{wall:.2f} s", wall <= 5.0))
    return out


def _cpu_targets(rows: Sequence[Row]) -> list[Target]:
    """Issue 14: upload <= 2.5 CPU-s per GB, export <= 0.8 CPU-ms per file (start-up apart)."""
    out = []
    for prefix, field, limit, unit in (
        ("1-", "cpu_s_per_gb", 2.5, "CPU-s/GB"),
        ("4-", "cpu_ms_per_file", 0.8, "CPU-ms/file"),
        ("4r-", "cpu_ms_per_file", 0.8, "CPU-ms/file"),
    ):
        row = _find(rows, prefix)
        rf = row.tools.get(RF) if row else None
        value = getattr(rf, field) if rf else None
        if row is not None and value is not None:
            out.append(
                Target(f"{row.key}: rfbatch <= {limit} {unit}", f"{value:.2f}", value <= limit)
            )
    return out


# --- output -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    head = (
        "| # | scenario | tool | wall s | files/s | MB/s | CPU s | CPU-s/GB | CPU-ms/file "
        "| peak RSS MB | emulator CPU s | rfbatch vs inference-cli | rfbatch vs ceiling |"
    )
    lines = [head, "|" + "---|" * 13]
    for row in rows:
        number, _, _ = row.key.partition("-")
        for tool, s in row.tools.items():
            vs_ref = vs_ceiling = ""
            if tool == RF:
                r = row.ratio(REF)
                c = row.ratio(CEIL)
                vs_ref = f"{r:.2f}x" if r is not None else ""
                vs_ceiling = f"{c * 100:.0f} %" if c is not None else ""
                inner = row.inner_ratio()
                if inner is not None:
                    vs_ceiling += f" ({inner * 100:.0f} % in-process)"
            failed = "" if s.ok_runs == s.runs else f" ({s.runs - s.ok_runs} failed)"
            lines.append(
                f"| {number} | {row.title} | {tool}{failed} | {_fmt(s.wall_s, 2)} "
                f"| {_fmt(s.files_per_s)} | {_fmt(s.mb_per_s)} | {_fmt(s.cpu_s, 2)} "
                f"| {_fmt(s.cpu_s_per_gb, 2)} | {_fmt(s.cpu_ms_per_file, 2)} "
                f"| {_fmt(s.peak_rss_mb, 0)} | {_fmt(s.emulator_cpu_s, 2)} "
                f"| {vs_ref} | {vs_ceiling} |"
            )
    return "\n".join(lines)


def startup_text(startup: Mapping[str, float]) -> str:
    shown = ", ".join(f"{tool} {cpu:.2f} s" for tool, cpu in startup.items())
    return f"Start-up CPU, counted apart from CPU-s/GB and CPU-ms/file: {shown}"


def targets_text(found: Sequence[Target]) -> str:
    marks = {True: "met", False: "MISSED", None: "n/a"}
    return "\n".join(f"- {marks[t.met]}: {t.name} ({t.measured})" for t in found)


def write_json(
    path: Path,
    meta: dict[str, Any],
    rows: Sequence[Row],
    found: Sequence[Target],
    records: Sequence[RunRecord],
) -> None:
    doc = {
        "meta": meta,
        "scenarios": {
            row.key: {
                "title": row.title,
                "tools": {tool: s.to_json() for tool, s in row.tools.items()},
                "ratios": {
                    "rfbatch_vs_inference_cli": _r(row.ratio(REF), 3),
                    "rfbatch_vs_ceiling": _r(row.ratio(CEIL), 3),
                    "rfbatch_in_process_vs_ceiling": _r(row.inner_ratio(), 3),
                },
            }
            for row in rows
        },
        "targets": [t.to_json() for t in found],
        "runs": [r.to_json() for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
