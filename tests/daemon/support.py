"""Run ``rfbatch run`` in a subprocess against the test's emulator and watch what it says."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from rfbatch.emulator import Emulator
from tests.conftest import API_KEY
from tests.e2e.support import RFBATCH, cli_env, lines_of
from tests.waiting import wait_for


def write_config(path: Path, emulator: Emulator, tmp: Path, **sections: Mapping[str, Any]) -> Path:
    """A daemon config aimed at the emulator, with fast clocks; ``sections`` override keys."""
    tree: dict[str, dict[str, Any]] = {
        "api": {"key": API_KEY, "base_url": emulator.base_url, "retry_timeout": 60.0},
        "scan": {"settle_seconds": 0.3, "rescan_interval_seconds": 5.0},
        "upload": {"ingest_poll_seconds": 0.1, "shard_max_files": 100},
        "job": {"poll_seconds": 0.2},
        "daemon": {
            "sources": [str(tmp / "src")],
            "http_listen": "127.0.0.1:0",
            "shard_linger_seconds": 0.3,
            "lifecycle_poll_seconds": 0.2,
            "shutdown_grace_seconds": 20.0,
            "min_free_bytes": 0,
        },
        "state": {"dir": str(tmp / "state")},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    lines = []
    for name, values in tree.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    (tmp / "src").mkdir(exist_ok=True)
    return path


class DaemonProcess:
    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.url: str | None = None

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        async for line in lines_of(self.process.stderr):
            self.raw.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "http.listening":
                self.url = event["url"]

    def saw(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def get(self, path: str) -> tuple[int, str]:
        assert self.url is not None
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as resp:  # noqa: S310
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    async def fetch(self, path: str) -> tuple[int, str]:
        return await anyio.to_thread.run_sync(self.get, path)

    async def metric(self, series: str) -> float:
        """The value of one series, named as exposed: ``rfbatch_files_total{outcome="x"}``."""
        _, text = await self.fetch("/metrics")
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == series:
                return float(value)
        raise AssertionError(f"{series} not in /metrics")

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            return await self.process.wait()


@asynccontextmanager
async def daemon(
    config: Path, emulator: Emulator, state: Path, *, api_key: str | None = None
) -> AsyncIterator[DaemonProcess]:
    """``rfbatch run -c config`` against ``emulator``; ``api_key`` replaces the tests' own key
    (the environment's key outranks the file's, so a config's key alone would not be used)."""
    env = cli_env(emulator, state)
    if api_key is not None:
        env["ROBOFLOW_API_KEY"] = api_key
    async with await anyio.open_process(
        [*RFBATCH, "run", "-c", str(config), "--log-format", "json"], env=env
    ) as process:
        proc = DaemonProcess(process)
        async with anyio.create_task_group() as tg:
            tg.start_soon(proc.read_logs)
            try:
                await wait_for(
                    lambda: proc.url is not None or process.returncode is not None,
                    "proc.url is not None or process.returncode is not None",
                )
                yield proc
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                tg.cancel_scope.cancel()
