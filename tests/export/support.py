"""Helpers for the export tests: fast-retry services, staged batches, jobs, file trees."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from rfbatch.api import ClientConfig, RetryPolicy, RoboflowClient
from rfbatch.api.schemas import ImageJobSpec
from rfbatch.app import Services
from rfbatch.emulator import Emulator
from rfbatch.samples import png_bytes
from rfbatch.settings import Settings, load_settings
from rfbatch.state.manifest import SqliteManifest
from rfbatch.transfer import BytesBody, Transfer, TransferConfig
from tests.conftest import API_KEY
from tests.e2e.support import run_env
from tests.tars import tar_of
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXPORT_CLI = [sys.executable, "-m", "tests.export.entry", "export"]
MiB = 1024 * 1024

# Retries stay bounded but near-instant, so fault tests take milliseconds per retry.
FAST_RETRY = RetryPolicy(
    attempts=10, timeout=30.0, wait_initial=0.001, wait_max=0.01, wait_jitter=0.001
)


def export_settings(base_url: str, state_dir: Path, **export: Any) -> Settings:
    values: dict[str, Any] = {"min_free_bytes": MiB, "workers": 4, "prefetch_pages": 2}
    values.update(export)
    return load_settings(
        None,
        {
            "api": {"key": API_KEY, "base_url": base_url},
            "state": {"dir": state_dir},
            "export": values,
        },
    )


@asynccontextmanager
async def fast_services(settings: Settings) -> AsyncIterator[Services]:
    """:func:`rfbatch.app.open_services` with instant retries."""
    config = ClientConfig(
        api_key=settings.api_key(),
        base_url=settings.api.base_url,
        connect_timeout=5.0,
        read_timeout=20.0,
        retry=FAST_RETRY,
    )
    transfer_config = TransferConfig(connect_timeout=5.0, read_timeout=20.0, retry=FAST_RETRY)
    async with RoboflowClient(config) as client, Transfer(transfer_config) as transfer:
        manifest = await SqliteManifest.open(settings.state.dir)
        try:
            yield Services(settings, client, transfer, manifest)
        finally:
            await manifest.close()


def images(count: int, *, seed: int = 0, size: int = 2000) -> dict[str, bytes]:
    """``count`` distinct PNGs by name, of slightly different sizes."""
    return {
        f"img-{i:04d}.png": png_bytes(8, 8, seed * 100_003 + i, pad_to=size + (i % 13))
        for i in range(count)
    }


async def stage_sharded(services: Services, batch_id: str, files: Mapping[str, bytes]) -> None:
    """Bulk-upload ``files`` as one tar shard and wait until the batch counts them all."""
    signed = await services.client.shard_upload_url(batch_id)
    await services.transfer.put(signed, BytesBody(tar_of(files)))

    async def counted() -> bool:
        return await services.client.count(batch_id) == len(files)

    await wait_for(counted, f"batch {batch_id} to count {len(files)}")


async def run_job(
    services: Services, job_id: str, batch_id: str, *, fmt: Literal["csv", "jsonl"] = "jsonl"
) -> None:
    """Start a workflow job on ``batch_id`` and wait until it succeeded."""
    client = services.client
    spec = ImageJobSpec(batch_id=batch_id, workflow_id="detect", aggregation_format=fmt)
    await client.start_job(job_id, spec)

    async def ended() -> bool:
        return (await client.get_job(job_id)).terminal

    await wait_for(ended, f"job {job_id} to end")
    job = await client.get_job(job_id)
    assert job.succeeded, job


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def emulator_digests(emulator: Emulator, batch_id: str) -> dict[str, str]:
    """``<part>/<name>`` (or ``<name>``) -> sha256, as the emulator holds the batch."""
    items = emulator.state()["batches"][batch_id]["items"]
    return {
        (f"{i['partName']}/{i['name']}" if i["partName"] else i["name"]): i["sha256"] for i in items
    }


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by relative POSIX path."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def tree_digests(root: Path) -> dict[str, str]:
    return {rel: sha(data) for rel, data in tree(root).items()}


def downloads(emulator: Emulator) -> int:
    """Downloads the emulator has served (refused URLs are not counted)."""
    count: int = emulator.state()["counters"]["downloads"]
    return count


def export_env(base_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run against ``base_url`` (the emulator or a fake service)."""
    return run_env(
        base_url,
        state_dir,
        **{"RFBATCH_EXPORT__MIN_FREE_BYTES": str(MiB), "PYTHONPATH": str(REPO), **extra},
    )
