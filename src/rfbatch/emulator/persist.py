"""Keep the emulator's records across restarts when it runs on a given ``state_dir``.

On a clean stop the batches (items, shards, parts, failures), the jobs and the reference-ingest
ids are written to ``<state_dir>/state.json``; the next start on the same folder reads them
back. Blob files stay where they are; blobs no record points to (a shard cut off by the stop)
are removed at start. Signed URLs are not kept: the signing secret is new every run, so a URL
from an earlier run answers 403 and a client asks for a fresh one, as with an expired URL. A job
that was running when the emulator stopped runs again from its first stage.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfbatch.emulator.job_model import Job, LogEntry, Stage, Task
from rfbatch.emulator.model import Batch, FailedItem, Item, Part, Shard, iso

if TYPE_CHECKING:
    from rfbatch.emulator.core import EmulatorCore

STATE_FILE = "state.json"
FORMAT = 1


def _ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else os.path.relpath(path, root)


def dump(core: EmulatorCore) -> dict[str, Any]:
    root = core.state_dir
    return {
        "format": FORMAT,
        "workspace": core.config.workspace,
        "batches": [_dump_batch(b, root) for b in core.store.batch_list],
        "jobs": [_dump_job(j) for j in core.jobs.order],
        "referenceIngests": [
            {"batchId": b, "ingestId": i, "answer": answer}
            for (b, i), answer in core.reference_ingests.items()
        ],
    }


def _dump_batch(batch: Batch, root: Path) -> dict[str, Any]:
    return {
        "batchId": batch.batch_id,
        "displayName": batch.display_name,
        "batchType": batch.batch_type,
        "contentType": batch.content_type,
        "uploadMode": batch.upload_mode,
        "created": iso(batch.created),
        "items": [
            {
                "id": i.item_id,
                "name": i.name,
                "part": i.part_name,
                "size": i.size,
                "sha256": i.sha256,
                "received": i.received,
                "blob": _rel(i.blob, root),
                "shard": i.shard_id,
                "contentType": i.content_type,
                "nested": i.nested_content_type,
            }
            for i in batch.items
        ],
        "shards": [
            {
                "id": s.shard_id,
                "name": s.status_name,
                "type": s.status_type,
                "ts": iso(s.event_timestamp),
                "objects": s.objects,
                "metadata": s.metadata,
            }
            for s in batch.shards
        ],
        "parts": [p.wire() for p in batch.parts.values()],
        "failed": [{"name": f.name, "reason": f.reason, "shard": f.shard_id} for f in batch.failed],
    }


def _dump_job(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "name": job.name,
        "definition": job.definition,
        "created": iso(job.created),
        "lastUpdate": iso(job.last_update),
        "state": job.state,
        "currentStage": job.current_stage,
        "lastNotification": job.last_notification,
        "overrides": job.overrides,
        "stages": [
            {
                "id": s.stage_id,
                "outputs": s.output_batches,
                "statusType": s.status_type,
                "notification": s.notification,
                "start": iso(s.start_ts),
                "last": iso(s.last_event_ts),
                "tasks": [
                    {
                        "id": t.task_id,
                        "progress": t.progress,
                        "statusType": t.status_type,
                        "notification": t.notification,
                        "ts": iso(t.event_ts),
                    }
                    for t in s.tasks
                ],
            }
            for s in job.stages
        ],
        "logs": [
            {
                "ts": iso(e.created),
                "severity": e.severity,
                "type": e.log_type,
                "payload": e.payload,
                "stage": e.stage_id,
                "task": e.task_id,
            }
            for e in job.logs
        ],
    }


def load(core: EmulatorCore, data: dict[str, Any]) -> list[Job]:
    """Rebuild the records; returns the jobs that were running and must run again."""
    if data.get("format") != FORMAT:
        raise ValueError(f"unsupported {STATE_FILE} format {data.get('format')!r}")
    root = core.state_dir
    for raw in data["batches"]:
        batch = core.store.create(
            raw["batchId"],
            display_name=raw["displayName"],
            batch_type=raw["batchType"],
            content_type=raw["contentType"],
            upload_mode=raw["uploadMode"],
        )
        batch.created = _ts(raw["created"])
        for i in raw["items"]:
            blob = root / i["blob"] if i["blob"] is not None else None
            batch.restore_item(
                Item(
                    item_id=i["id"],
                    name=i["name"],
                    part_name=i["part"],
                    size=i["size"],
                    sha256=i["sha256"],
                    received=i["received"],
                    blob=blob,
                    shard_id=i["shard"],
                    content_type=i["contentType"],
                    nested_content_type=i["nested"],
                )
            )
        for s in raw["shards"]:
            batch.add_shard(
                Shard(s["id"], s["name"], s["type"], _ts(s["ts"]), s["objects"], s["metadata"])
            )
        for p in raw["parts"]:
            batch.parts[p["partName"]] = Part(
                p["partName"],
                p["partType"],
                p["contentType"],
                p.get("partDescription"),
                p.get("nestedContentType"),
            )
        batch.failed = [FailedItem(f["name"], f["reason"], f["shard"]) for f in raw["failed"]]
    for entry in data.get("referenceIngests", []):
        core.reference_ingests[(entry["batchId"], entry["ingestId"])] = entry["answer"]
    to_resume: list[Job] = []
    for raw in data["jobs"]:
        job = Job(job_id=raw["jobId"], name=raw["name"], definition=raw["definition"])
        job.created = _ts(raw["created"])
        job.last_update = _ts(raw["lastUpdate"])
        job.state = raw["state"]
        job.current_stage = raw["currentStage"]
        job.last_notification = raw["lastNotification"]
        job.overrides = raw["overrides"]
        job.stages = [_load_stage(s) for s in raw["stages"]]
        job.logs = [
            LogEntry(_ts(e["ts"]), e["severity"], e["type"], e["payload"], e["stage"], e["task"])
            for e in raw["logs"]
        ]
        core.jobs.add(job)
        if job.state == "running":
            to_resume.append(job)
    return to_resume


def _load_stage(raw: dict[str, Any]) -> Stage:
    tasks = [
        Task(
            t["id"],
            [],
            progress=t["progress"],
            status_type=t["statusType"],
            notification=t["notification"],
            event_ts=_ts(t["ts"]),
        )
        for t in raw["tasks"]
    ]
    return Stage(
        raw["id"],
        tasks,
        raw["outputs"],
        status_type=raw["statusType"],
        notification=raw["notification"],
        start_ts=_ts(raw["start"]),
        last_event_ts=_ts(raw["last"]),
    )


def referenced_blobs(core: EmulatorCore) -> set[Path]:
    return {
        item.blob
        for batch in core.store.batch_list
        for item in batch.items
        if item.blob is not None
    }


def write_file(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically: a crash mid-write leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_file(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def sweep_orphans(blob_dir: Path, keep: set[Path]) -> None:
    """Remove blob files no record points to."""
    if not blob_dir.is_dir():
        return
    for path in blob_dir.iterdir():
        if path.is_file() and path not in keep:
            path.unlink(missing_ok=True)
