"""Helpers for end-to-end tests: settings aimed at a test emulator, file trees, state checks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from rfbatch.emulator import Emulator
from rfbatch.samples import png_bytes
from rfbatch.settings import Settings, load_settings
from tests.conftest import API_KEY


def settings_for(emulator: Emulator, state_dir: Path, **sections: Mapping[str, Any]) -> Settings:
    tree: dict[str, Any] = {
        "api": {
            "key": API_KEY,
            "base_url": emulator.base_url,
            "retry_attempts": 8,
            "retry_timeout": 60.0,
        },
        "state": {"dir": state_dir},
        "scan": {"settle_seconds": 0.0},
        "upload": {"ingest_poll_seconds": 0.05, "ingest_timeout_seconds": 60.0},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return load_settings(None, tree)


def make_tree(root: Path, count: int, *, seed: int = 0, size: int = 3000) -> dict[str, bytes]:
    """``count`` PNGs spread over nested folders, with repeated basenames across folders."""
    files: dict[str, bytes] = {}
    for i in range(count):
        rel = f"cam{i % 3}/day{i % 2}/img-{i // 6:05d}.png"
        data = png_bytes(8, 8, seed * 100_003 + i, pad_to=size + (i % 17))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def result_records(output: Path) -> dict[str, dict[str, object]]:
    """Every JSONL record under ``output``, by the input file name it describes."""
    out = {}
    for path in output.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out[str(record["file_name"])] = record
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_items(emulator: Emulator, batch_id: str) -> list[dict[str, Any]]:
    batch = emulator.state()["batches"].get(batch_id)
    return list(batch["items"]) if batch else []


def received_digests(emulator: Emulator, batch_id: str) -> dict[str, int]:
    """sha256 -> how many times content with that digest arrived in the batch."""
    out: dict[str, int] = {}
    for item in batch_items(emulator, batch_id):
        out[item["sha256"]] = out.get(item["sha256"], 0) + int(item["received"])
    return out


def run_env(
    base_url: str, state_dir: Path, *, api_key: str = API_KEY, **variables: str
) -> dict[str, str]:
    """The environment of an ``rfbatch`` run against ``base_url``: this process's, less every
    setting, key and API URL of its own, plus the key, the URL, the state folder, JSON logs and
    ``variables`` (which may override those)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RFBATCH_", "ROBOFLOW_", "API_"))
    }
    env.update(
        ROBOFLOW_API_KEY=api_key,
        API_BASE_URL=base_url,
        RFBATCH_STATE__DIR=str(state_dir),
        RFBATCH_LOG__FORMAT="json",
    )
    env.update(variables)
    return env


def cli_env(emulator: Emulator, state_dir: Path) -> dict[str, str]:
    return run_env(
        emulator.base_url,
        state_dir,
        RFBATCH_SCAN__SETTLE_SECONDS="0",
        RFBATCH_UPLOAD__INGEST_POLL_SECONDS="0.05",
    )


RFBATCH = [sys.executable, "-m", "rfbatch"]


async def run_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``rfbatch ARGS`` to completion without blocking the loop (the emulator runs in it)."""
    return await anyio.run_process([*RFBATCH, *args], env=dict(env), check=False)


async def lines_of(stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[str]:
    """The complete lines a child process writes to ``stream``, as they arrive."""
    buffer = ""
    async for text in TextReceiveStream(stream):
        buffer += text
        *lines, buffer = buffer.split("\n")
        for line in lines:
            yield line
