"""Across a path where every answer waits a round trip, the export runs more downloads at once."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import anyio

from rfbatch.emulator import EmulatorConfig, running_emulator
from rfbatch.emulator.link import LinkProfile
from tests.conftest import API_KEY, WORKSPACE
from tests.export.support import export_env, export_settings, fast_services, images, stage_sharded
from tests.export.support import tree as tree_of

RFBATCH = [sys.executable, "-m", "rfbatch"]


def events(done: subprocess.CompletedProcess[bytes], name: str) -> list[dict[str, object]]:
    found = []
    for line in done.stderr.decode().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


async def test_downloads_grow_past_their_start_while_throughput_grows(tmp_path: Path) -> None:
    files = images(1500, size=2000)
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, state_dir=tmp_path / "emu")
    # Every answer 50 ms late and no bandwidth cap: eight downloads at once (where the limit
    # starts) fetch at most 160 files a second, sixteen twice that.
    async with running_emulator(replace(config, link=LinkProfile(rtt=0.05))) as emu:
        settings = export_settings(emu.base_url, tmp_path / "stage-state")
        async with fast_services(settings) as services:
            await stage_sharded(services, "wan-in", files)
        env = export_env(emu.base_url, tmp_path / "state")
        out = tmp_path / "out"
        done = await anyio.run_process(
            [*RFBATCH, "export", "wan-in", "--output", str(out)], env=env, check=False
        )

    assert done.returncode == 0, done.stderr.decode()
    assert tree_of(out) == files
    kept = events(done, "transfer.concurrency.kept")
    assert kept, done.stderr.decode()[-3000:]
    assert {record["pool"] for record in kept} == {"download"}
    assert max(int(str(record["limit"])) for record in kept) >= 16
