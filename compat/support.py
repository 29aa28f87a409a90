"""Small helpers shared by the compat tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfbatch.emulator import Emulator
from tests.waiting import wait_for_sync

API_KEY = "compat-key-0123456789"
WORKSPACE = "compat-ws"
DEADLINE = 60.0
CLI_TIMEOUT = 120

_MAKE_VIDEOS = """
import sys
import cv2
import numpy as np
for index, (name, fourcc) in enumerate([("clip-a.mp4", "mp4v"), ("clip-b.avi", "MJPG")]):
    writer = cv2.VideoWriter(f"{sys.argv[1]}/{name}", cv2.VideoWriter_fourcc(*fourcc), 5, (32, 24))
    for frame in range(6):
        writer.write(np.full((24, 32, 3), (index * 90 + frame * 30) % 256, dtype=np.uint8))
    writer.release()
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_images(folder: Path, count: int, prefix: str = "img") -> dict[str, bytes]:
    """``count`` distinct small files with image extensions; returns name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    for n in range(count):
        ext = ("jpg", "png", "jpeg")[n % 3]
        name = f"{prefix}-{n:03d}.{ext}"
        data = f"{name}:".encode() + os.urandom(200 + n)
        (folder / name).write_bytes(data)
        out[name] = data
    return out


def make_videos(python: Path, folder: Path) -> dict[str, bytes]:
    """Two real few-frame videos written by the reference client's own cv2."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-c", _MAKE_VIDEOS, str(folder)], check=True, timeout=60)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def items_of(emu: Emulator, batch: str) -> dict[str, str]:
    """name -> sha256 of what the emulator holds for ``batch``."""
    batch_state = emu.state()["batches"].get(batch, {"items": []})
    return {item["name"]: item["sha256"] for item in batch_state["items"]}


def wait_count(emu: Emulator, batch: str, count: int) -> None:
    wait_for_sync(
        lambda: emu.state()["batches"].get(batch, {}).get("count") == count,
        f"batch {batch} to hold {count} items",
    )


def wait_job(emu: Emulator, job_id: str, state: str) -> None:
    wait_for_sync(
        lambda: emu.state()["jobs"].get(job_id, {}).get("state") == state,
        f"job {job_id} to be {state}",
    )


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``root`` (the CLI's logs excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


@dataclass
class Cli:
    binary: Path
    emulator: Emulator
    cwd: Path

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "API_BASE_URL": self.emulator.base_url,
            "ROBOFLOW_API_KEY": API_KEY,
            "COLUMNS": "250",
            "NO_COLOR": "1",
        }
        proc = subprocess.run(
            [str(self.binary), "rf-cloud", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if proc.returncode != expect:
            raise AssertionError(
                f"`inference rf-cloud {' '.join(args)}` exited {proc.returncode}, "
                f"expected {expect}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 recording every POST (headers and JSON body)."""

    url: str = ""
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.received]
