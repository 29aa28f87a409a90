"""Helpers for the jobs tests: input batches, a client, the job CLI as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from rfbatch.api import RoboflowClient
from rfbatch.app import open_client, transfer_config
from rfbatch.emulator import Emulator
from rfbatch.samples import png_bytes
from rfbatch.settings import Settings
from rfbatch.transfer import Transfer
from rfbatch.transfer.body import BytesBody
from tests.e2e.support import settings_for
from tests.waiting import wait_for

# The root CLI wires `rfbatch job` in later; until then the group runs on its own.
JOB_CLI = [sys.executable, "-c", "from rfbatch.cli.job_cmd import app; app()"]
WEBHOOK_BEARER = "Bearer rf_test-ws"  # what the emulator sends for workspace "test-ws"


@asynccontextmanager
async def client_for(
    emulator: Emulator, tmp_path: Path, **sections: Mapping[str, Any]
) -> AsyncIterator[tuple[Settings, RoboflowClient]]:
    settings = settings_for(emulator, tmp_path / "state", **sections)
    async with open_client(settings) as client:
        yield settings, client


async def image_batch(client: RoboflowClient, batch_id: str, count: int = 3) -> None:
    """A simple batch of ``count`` small PNGs (synchronous uploads: ready at once)."""
    for i in range(count):
        await client.upload_image(batch_id, f"img-{i:03d}.png", png_bytes(8, 8, i))


async def video_batch(settings: Settings, client: RoboflowClient, batch_id: str) -> None:
    """A batch holding one (fake) video, uploaded through its signed URL."""
    signed = await client.video_upload_url(batch_id, "clip.mp4")
    async with Transfer(transfer_config(settings)) as transfer:
        await transfer.put(signed, BytesBody(b"\x00\x00\x00\x18ftypmp42" + b"v" * 4000))

    async def counted() -> bool:
        return await client.count(batch_id) >= 1

    await wait_for(counted, f"the video in batch {batch_id} to be counted")


async def put_shard(settings: Settings, client: RoboflowClient, batch_id: str, tar: bytes) -> None:
    signed = await client.shard_upload_url(batch_id)
    async with Transfer(transfer_config(settings)) as transfer:
        await transfer.put(signed, BytesBody(tar))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_event_id() -> str:
    return str(uuid.uuid4())


async def job_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``rfbatch job ARGS`` to completion without blocking the loop the emulator runs in."""
    return await anyio.run_process([*JOB_CLI, *args], env=dict(env), check=False)


async def job_cli_all(
    runs: Sequence[list[str]], env: Mapping[str, str]
) -> list[subprocess.CompletedProcess[bytes]]:
    """Run independent ``rfbatch job`` commands side by side; results in the order given."""
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def one(index: int, args: list[str]) -> None:
        results[index] = await job_cli(args, env)

    async with anyio.create_task_group() as tg:
        for index, args in enumerate(runs):
            tg.start_soon(one, index, args)
    return [results[i] for i in range(len(runs))]


def stored_definition(emulator: Emulator, job_id: str) -> dict[str, Any]:
    """The job definition the emulator stored for ``job_id``, as the service received it."""
    definition: dict[str, Any] = emulator.state()["jobs"][job_id]["definition"]
    return definition
