"""What a workflow job leaves behind: results files and their export archives.

When every ``processing`` task is done, one results file per task is written to the
:data:`RESULTS_PART` part of the multipart batch ``<job>-processing`` (JSONL, or CSV when
``aggregationFormat`` is ``csv``): one record per input item with its file name, its SHA-256 and
a fake prediction derived from both (so the same input always gives the same output). ``export``
then packs each results file into a ``.tar.gz`` in the :data:`RESULTS_PART` part of
``<job>-export``. The bytes are kept under the core's ``output_dir`` in every store mode.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rfbatch.emulator.job_model import Job
from rfbatch.emulator.model import Batch, Item, Part, Store

if TYPE_CHECKING:
    from rfbatch.emulator.core import EmulatorCore

RESULTS_PART = "results"


def fake_prediction(workflow_id: str, name: str, sha256: str) -> dict[str, Any]:
    """A deterministic stand-in for a model output, derived from the input and the workflow."""
    seed = hashlib.sha256(f"{workflow_id}\n{name}\n{sha256}".encode()).digest()
    classes = ("car", "person", "dog", "bicycle")
    return {
        "class": classes[seed[0] % len(classes)],
        "confidence": round(0.5 + seed[1] / 512, 4),
        "x": seed[2],
        "y": seed[3],
        "width": 1 + seed[4],
        "height": 1 + seed[5],
    }


def render_results(workflow_id: str, items: list[tuple[str, str, int]], fmt: str) -> bytes:
    rows = [
        {
            "file_name": name,
            "sha256": sha,
            "size": size,
            "workflow_id": workflow_id,
            "predictions": [fake_prediction(workflow_id, name, sha)],
        }
        for name, sha, size in items
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file_name", "sha256", "size", "workflow_id", "predictions"])
        for row in rows:
            writer.writerow(
                [
                    row["file_name"],
                    row["sha256"],
                    row["size"],
                    row["workflow_id"],
                    json.dumps(row["predictions"], sort_keys=True),
                ]
            )
        return out.getvalue().encode()
    return b"".join(json.dumps(row, sort_keys=True).encode() + b"\n" for row in rows)


def tar_gz(name: str, data: bytes) -> bytes:
    """A reproducible one-member ``.tar.gz`` (fixed mtimes, so equal inputs give equal bytes)."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def ensure_output_batch(store: Store, job: Job, batch_id: str) -> Batch:
    """The output batch ``batch_id`` of ``job`` with its results part, created on first use."""
    batch = store.get(batch_id)
    if batch is None:
        batch = store.create(
            batch_id,
            display_name=f"{job.name} {batch_id.rsplit('-', 1)[-1]}",
            batch_type="multipart-batch",
            content_type="mixed",
            upload_mode="system",
        )
    fmt = job.definition["processingSpecification"].get("aggregationFormat") or "jsonl"
    if batch_id.endswith("-export"):
        batch.parts.setdefault(
            RESULTS_PART,
            Part(RESULTS_PART, "results-archive", "archives", "Archived results", "metadata"),
        )
    else:
        description = f"Workflow results ({fmt})"
        batch.parts.setdefault(
            RESULTS_PART, Part(RESULTS_PART, "workflow-results", "metadata", description)
        )
    return batch


async def write_results(
    core: EmulatorCore, job: Job, batch_id: str, chunks: list[list[Item]]
) -> list[Path]:
    """One results file per task's ``chunk`` of inputs; returns where each was written."""
    spec = job.definition["processingSpecification"]
    fmt = spec.get("aggregationFormat") or "jsonl"
    workflow = spec["workflowId"]
    batch = ensure_output_batch(core.store, job, batch_id)
    out_dir = core.output_dir / job.job_id / "processing"
    written: list[Path] = []
    for index, chunk in enumerate(chunks):
        rows = [(item.name, item.sha256, item.size) for item in chunk]
        data = render_results(workflow, rows, fmt)
        written.append(await _keep(core, batch, out_dir / f"results-{index:04d}.{fmt}", data))
    return written


async def write_export(core: EmulatorCore, job: Job, batch_id: str, results: list[Path]) -> None:
    """A ``.tar.gz`` of each results file, in the export batch."""
    batch = ensure_output_batch(core.store, job, batch_id)
    out_dir = core.output_dir / job.job_id / "export"
    for path in results:
        data = await anyio.Path(path).read_bytes()
        archive = await anyio.to_thread.run_sync(tar_gz, path.name, data)
        await _keep(core, batch, out_dir / f"{path.name}.tar.gz", archive, nested="metadata")


async def _keep(
    core: EmulatorCore, batch: Batch, path: Path, data: bytes, *, nested: str | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically and list it, by its file name, in the results part.

    A rerun of the job writes the same paths, so the item is replaced in place.
    """

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    await anyio.to_thread.run_sync(write, limiter=core.io_limiter)
    batch.put_item(
        name=path.name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blob=path,
        part_name=RESULTS_PART,
        nested_content_type=nested,
    )
    return path
