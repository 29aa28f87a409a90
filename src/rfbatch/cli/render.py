"""How the CLI shows things: JSON documents, tables, wire views, run reports, live progress.

Every command imports this module, so the result types it renders are imported for type checking
only: a command loads the pipeline it runs, never the ones it does not.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    FileSizeColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from rfbatch.escapes import SURROGATE, printable
from rfbatch.obs.progress import Row, live_rows

if TYPE_CHECKING:
    from pydantic import BaseModel

    from rfbatch.api.schemas import JobMetadata
    from rfbatch.pipeline.export import ExportProgress, ExportResult, ProgressHook
    from rfbatch.pipeline.jobs import JobOutcome, JobView
    from rfbatch.pipeline.sync import SyncResult
    from rfbatch.pipeline.upload_pass import PassResult

# --- documents and tables --------------------------------------------------------------------


# The version of the documents rfbatch itself writes with ``--json`` (run reports and errors):
# raised when a key is renamed or removed, never when one is added.
SCHEMA_VERSION = 1


def print_json(obj: Any) -> None:
    """An API object or listing as the service sent it (its own camelCase names)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_report(body: dict[str, Any]) -> None:
    """One of rfbatch's own documents: snake_case keys, a ``schema_version`` first."""
    print_json(_reversible({"schema_version": SCHEMA_VERSION, **body}))


def _reversible(doc: Any) -> Any:
    """``doc`` with every text that holds undecodable bytes (a file name that is not UTF-8)
    made safe for any JSON reader, and kept exactly: the text with ``\\xNN`` escapes (as
    :func:`printable`), plus ``<key>_base64``, the name's raw bytes."""
    if isinstance(doc, list):
        return [_reversible(item) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, str) and SURROGATE.search(value):
            out[key] = printable(value)
            try:  # a file name's undecodable bytes, back as they were
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate some server sent: kept as is
                raw = value.encode("utf-8", "surrogatepass")
            out[f"{key}_base64"] = base64.b64encode(raw).decode("ascii")
        else:
            out[key] = _reversible(value)
    return out


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows under a header, every id whole; nested values shown as compact JSON.

    On a terminal a rich table whose cells fold rather than end in "…" (an id cut short is
    worse than a tall row); elsewhere (a pipe, a file) plain aligned columns, whole rows at any
    width, for grep and awk.
    """
    cells = [[printable(cell(row.get(c))) for c in columns] for row in rows]
    if sys.stdout.isatty():
        out = Table(*columns)
        for column in out.columns:
            column.overflow = "fold"
        for values in cells:
            out.add_row(*values)
        Console().print(out)
        return
    widths = [max([len(c), *(len(values[i]) for values in cells)]) for i, c in enumerate(columns)]
    for values in [list(columns), *cells]:
        line = "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- API objects as the wire names them ------------------------------------------------------


def wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def wire_without_nulls(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def job_wire(job: JobMetadata) -> dict[str, Any]:
    data = wire(job)
    # The GB-DOC status/progress pair is optional and usually absent: show it only when sent.
    for key in ("status", "progress"):
        if data.get(key) is None:
            data.pop(key, None)
    return data


def job_state(job: JobMetadata) -> str:
    if job.is_running:
        return "running"
    return "succeeded" if job.succeeded else "failed"


def job_outcome(outcome: JobOutcome) -> dict[str, Any]:
    """How following a job ended; ``job`` is the service's last answer, as it sent it."""
    return {
        "job_id": outcome.job_id,
        "state": outcome.state,
        "succeeded": outcome.succeeded,
        "timed_out": outcome.timed_out,
        "message": outcome.message,
        "output_batches": list(outcome.output_batches),
        "seconds": outcome.seconds,
        "polls": outcome.polls,
        "webhook_wakeups": outcome.wakeups,
        "job": job_wire(outcome.job) if outcome.job is not None else None,
    }


# --- run reports -----------------------------------------------------------------------------


def upload_summary(result: PassResult) -> dict[str, object]:
    t = result.tally
    return {
        "files_found": t.found,
        "files_unchanged": t.unchanged,
        "files_sent": t.sent,
        "files_skipped": t.skipped_count,
        "files_failed": t.failed_count,
        "files_ignored": t.ignored,
        "files_ignored_by_type": t.ignored - t.ignored_by_name,
        "files_ignored_by_name": t.ignored_by_name,
        "bytes_sent": t.sent_bytes,
        "shards": t.shards,
        "videos": t.videos,
        "seconds": round(t.seconds, 3),
        "phases": _phases(result.phases),
        "confirmed": all(c.confirmed for c in result.confirmations),
        "batches": [
            {
                "batch_id": c.batch_id,
                "expected": c.expected,
                "count": c.count,
                "failed_by_service": c.failed_by_service,
                "confirmed": c.confirmed,
            }
            for c in result.confirmations
        ],
        "skipped": [{"path": f.path, "reason": f.reason} for f in t.skipped],
        "failed": [{"path": f.path, "reason": f.reason} for f in t.failed],
    }


def _phases(phases: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in phases.items()}


def upload_report(result: PassResult, json_out: bool) -> None:
    if json_out:
        print_report(upload_summary(result))
        return
    t = result.tally
    mb = t.sent_bytes / 1e6
    secs = result.phases.get("upload", t.seconds)  # the time spent sending, not confirming
    rate = mb / secs if secs > 0 else 0.0
    print(
        f"sent {t.sent} files ({mb:.1f} MB, {rate:.1f} MB/s) in {secs:.1f} s; "
        f"{t.unchanged} unchanged, {t.skipped_count} skipped, {t.failed_count} failed"
    )
    if t.ignored:
        print(ignored_line(result))
    for c in result.confirmations:
        state = "confirmed" if c.confirmed else "NOT confirmed"
        print(f"batch {c.batch_id}: {c.count} items ({c.expected} expected) {state}")
    for f in result.tally.skipped:
        print(f"skipped {printable(f.path)}: {printable(f.reason)}")
    for f in result.tally.failed:
        print(f"failed {printable(f.path)}: {printable(f.reason)}")


def ignored_line(result: PassResult) -> str:
    """How many files the scan passed over, and why: a type not sent (with the types that are)
    or a name matched by ``[scan] ignore_names``."""
    t = result.tally
    nothing = not (t.sent or t.unchanged or t.skipped_count or t.failed_count)
    by_type = t.ignored - t.ignored_by_name
    why: list[str] = []
    if by_type:
        sent = "; ".join(
            f"{kind}s: {' '.join('.' + ext for ext in sorted(exts))}"
            for kind, exts in result.extensions.items()
        )
        why.append(
            f"{by_type} not of a type rfbatch sends ({sent}; [scan] image_extensions and "
            "video_extensions)"
        )
    if t.ignored_by_name:
        why.append(f"{t.ignored_by_name} matched by [scan] ignore_names")
    found = "no media files found: " if nothing else ""
    return f"{found}{t.ignored} other files ignored: {', '.join(why)}"


def export_summary(results: list[ExportResult]) -> dict[str, Any]:
    return {
        "files_downloaded": sum(r.downloaded for r in results),
        "files_skipped": sum(r.skipped for r in results),
        "files_failed": sum(len(r.failed) for r in results),
        "files_unpacked": sum(r.unpacked for r in results),
        "bytes": sum(r.bytes for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
        "complete": all(r.complete for r in results),
        "stopped": next((r.stopped for r in results if r.stopped), None),
        "batches": [r.summary() for r in results],
    }


def export_report(results: list[ExportResult], json_out: bool) -> None:
    if json_out:
        print_report(export_summary(results))
        return
    for r in results:
        mb = r.bytes / 1e6
        rate = mb / r.seconds if r.seconds > 0 else 0.0
        unpacked = f", {r.unpacked} unpacked from archives" if r.unpacked else ""
        print(
            f"batch {r.batch_id} -> {printable(r.output_dir)}: downloaded {r.downloaded} files "
            f"({mb:.1f} MB, {rate:.1f} MB/s) in {r.seconds:.1f} s; "
            f"{r.skipped} already present, {len(r.failed)} failed{unpacked}"
        )
        for f in r.failed:
            where = "/".join(x for x in (f.part_name, f.file_name) if x) or "?"
            print(f"failed {where!r}: {printable(f.reason)}")  # repr: quoted and escaped


def sync_report(result: SyncResult, json_out: bool) -> None:
    data: dict[str, Any] = {
        "complete": result.complete,
        "phases": _phases(result.phases),
        "upload": upload_summary(result.upload),
        "jobs": [{"batch_id": b, **job_outcome(o)} for b, o in result.jobs.items()],
        "export": export_summary(result.exports),
    }
    if json_out:
        print_report(data)
        return
    upload_report(result.upload, json_out=False)
    for batch_id, outcome in result.jobs.items():
        line = f"job {outcome.job_id} (batch {batch_id}): {outcome.state}"
        failed = outcome.message and not outcome.succeeded
        print(line + (f": {printable(outcome.message)}" if failed else ""))
    for export in result.exports:
        print(
            f"results {export.batch_id}: {export.downloaded} downloaded, {export.skipped} already "
            f"there, {len(export.failed)} failed -> {printable(export.output_dir)}"
        )
    times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items())
    print(f"time: {times}; total {sum(result.phases.values()):.1f} s")


# --- live progress on a terminal -------------------------------------------------------------


@asynccontextmanager
async def job_progress(
    job_id: str, *, enabled: bool
) -> AsyncIterator[Callable[[JobView], None] | None]:
    """One row per stage of the job: stage, state, tasks done of total, progress.

    Yields the ``on_update`` callback to follow the job with (``None`` when nothing is shown).
    """
    latest: list[JobView] = []

    def on_update(view: JobView) -> None:
        latest[:] = [view]

    def snapshot() -> list[Row]:
        if not latest:
            return []
        if not latest[0].stages:
            return [Row("", f"{job_id} waiting")]
        return [
            Row(
                stage.stage_id,
                f"{job_id} {stage.stage_id} "
                f"[{'running' if stage.running else stage.stage.status_type}]",
                completed=stage.progress,
                total=1.0,
                detail=f"{stage.tasks_done}/{stage.tasks_total} tasks",
            )
            for stage in latest[0].stages
        ]

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    async with live_rows(snapshot, columns, enabled=enabled) as shown:
        yield on_update if shown else None


@asynccontextmanager
async def export_progress(
    *, enabled: bool, waiting: str | None = "listing"
) -> AsyncIterator[ProgressHook | None]:
    """A bar of files and bytes (and the rate), fed through the export's progress hook.

    Yields the hook (``None`` when nothing is shown). The hook only keeps the batch whose
    counters moved last; the display reads them a few times a second. Before the first
    counters, the row says ``waiting`` (no row at all when it is ``None``: sync's export
    phase comes after its upload and job).
    """
    latest: list[ExportProgress] = []

    def hook(progress: ExportProgress) -> None:
        if not latest or latest[0] is not progress:
            latest[:] = [progress]

    def snapshot() -> list[Row]:
        if not latest:
            return [] if waiting is None else [Row("export", waiting)]
        p = latest[0]
        listed = f"{p.files_listed}" if p.listing_done else f"{p.files_listed}+"
        failed = f", {p.files_failed} failed" if p.files_failed else ""
        description = f"{p.batch_id}: {p.files_finished}/{listed} files{failed}"
        return [Row("export", description, completed=p.bytes_received)]

    # The listing announces no sizes, so bytes are shown as done so far, not as a fraction.
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        FileSizeColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    async with live_rows(snapshot, columns, enabled=enabled) as shown:
        yield hook if shown else None
