"""``rfbatch export`` as a user runs it: a subprocess, its exit code, its JSON, its messages."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from tests.conftest import API_KEY
from tests.export.fake_staging import SIGNATURE, FakeBatch, FakeFile, FakeStaging, running_fake
from tests.export.support import (
    EXPORT_CLI,
    REPO,
    downloads,
    export_env,
    export_settings,
    fast_services,
    images,
    stage_sharded,
    tree,
)
from tests.waiting import wait_for


async def export_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([*EXPORT_CLI, *args], env=dict(env), cwd=REPO, check=False)


def summary_of(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(done.stdout)
    return data


async def stage(emulator: Emulator, tmp_path: Path, batch_id: str, files: dict[str, bytes]) -> None:
    settings = export_settings(emulator.base_url, tmp_path / "stage-state")
    async with fast_services(settings) as services:
        await stage_sharded(services, batch_id, files)


async def settled_downloads(emulator: Emulator, quiet: float = 0.3) -> int:
    """The emulator's download count once it stopped moving for ``quiet`` seconds.

    A request cut off by a killed client is still counted when its handler gets to it.
    """
    last, since = downloads(emulator), time.monotonic()
    with anyio.fail_after(30):
        while time.monotonic() - since < quiet:
            await anyio.sleep(0.02)
            now = downloads(emulator)
            if now != last:
                last, since = now, time.monotonic()
    return last


async def test_json_summary_rerun_and_force(emulator: Emulator, tmp_path: Path) -> None:
    files = images(25)
    await stage(emulator, tmp_path, "cli-in", files)
    env = export_env(emulator.base_url, tmp_path / "state", RFBATCH_EXPORT__PAGE_SIZE="4")
    out = tmp_path / "out"

    first = await export_cli(["cli-in", "--output", str(out), "--json"], env)

    assert first.returncode == 0, first.stderr.decode()
    summary = summary_of(first)
    assert summary["files_downloaded"] == 25
    assert summary["files_failed"] == 0
    assert summary["complete"] is True
    assert summary["bytes"] == sum(len(d) for d in files.values())
    assert summary["batches"][0]["output"] == str(out)
    assert tree(out) == files
    logs = first.stderr.decode()
    assert API_KEY not in logs
    events = [json.loads(line)["event"] for line in logs.splitlines()]
    assert "export.batch" in events

    again = await export_cli(["cli-in", "--output", str(out), "--json"], env)
    forced = await export_cli(["cli-in", "-o", str(out), "--force"], env)

    assert again.returncode == 0
    assert (summary_of(again)["files_downloaded"], summary_of(again)["files_skipped"]) == (0, 25)
    assert forced.returncode == 0
    assert "downloaded 25 files" in forced.stdout.decode()
    assert downloads(emulator) == 50
    assert tree(out) == files


async def test_several_batches_go_to_subfolders(emulator: Emulator, tmp_path: Path) -> None:
    await stage(emulator, tmp_path, "a-in", images(3, seed=1))
    await stage(emulator, tmp_path, "b-in", images(4, seed=2))
    env = export_env(emulator.base_url, tmp_path / "state")
    out = tmp_path / "out"

    done = await export_cli(["a-in", "b-in", "--output", str(out), "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    assert [b["batch_id"] for b in summary_of(done)["batches"]] == ["a-in", "b-in"]
    assert tree(out) == {
        **{f"a-in/{n}": d for n, d in images(3, seed=1).items()},
        **{f"b-in/{n}": d for n, d in images(4, seed=2).items()},
    }


async def test_usage_and_api_errors_exit_2_and_3(emulator: Emulator, tmp_path: Path) -> None:
    await stage(emulator, tmp_path, "sharded", images(2))
    env = export_env(emulator.base_url, tmp_path / "state")
    out = tmp_path / "out"
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"")

    bad_id = await export_cli(["Bad Id", "--output", str(out)], env)
    no_parts = await export_cli(["sharded", "--output", str(out), "--part", "x"], env)
    file_out = await export_cli(["sharded", "--output", str(a_file)], env)
    missing = await export_cli(["no-such-batch", "--output", str(out)], env)
    env_bad_key = {**env, "ROBOFLOW_API_KEY": "wrong-key-5e1d"}
    bad_key = await export_cli(["sharded", "--output", str(out)], env_bad_key)

    assert bad_id.returncode == 2
    assert "invalid batch id 'Bad Id'" in bad_id.stderr.decode()
    assert no_parts.returncode == 2
    assert "has no parts to choose" in no_parts.stderr.decode()
    assert file_out.returncode == 2
    assert "is not a folder" in file_out.stderr.decode()
    assert missing.returncode == 3
    assert "404" in missing.stderr.decode()
    assert bad_key.returncode == 3
    assert "wrong-key-5e1d" not in bad_key.stderr.decode() + bad_key.stdout.decode()
    assert downloads(emulator) == 0


async def test_failed_files_exit_1_with_reasons(tmp_path: Path) -> None:
    fake = FakeStaging()
    fake.add(
        "mixed",
        FakeBatch(
            "simple-batch",
            {
                None: [
                    FakeFile("ok.bin", b"ok"),
                    FakeFile("../up.bin", b"x"),
                    FakeFile("404.bin", None),
                ]
            },
        ),
    )
    out = tmp_path / "out"
    async with running_fake(fake):
        env = export_env(fake.base_url, tmp_path / "state", RFBATCH_API__RETRY_ATTEMPTS="2")
        done = await export_cli(["mixed", "--output", str(out), "--json"], env)
        human = await export_cli(["mixed", "--output", str(out)], env)

    assert done.returncode == 1, done.stderr.decode()
    summary = summary_of(done)
    assert summary["complete"] is False
    assert {f["file"] for f in summary["batches"][0]["failed"]} == {"../up.bin", "404.bin"}
    assert tree(out) == {"ok.bin": b"ok"}
    assert human.returncode == 1
    text = human.stdout.decode()
    assert "failed '../up.bin'" in text
    assert "1 already present, 2 failed" in text
    assert SIGNATURE not in done.stdout.decode() + done.stderr.decode() + text


async def test_disk_floor_exits_1_with_a_clear_error(emulator: Emulator, tmp_path: Path) -> None:
    await stage(emulator, tmp_path, "floor", images(3))
    env = export_env(
        emulator.base_url, tmp_path / "state", RFBATCH_EXPORT__MIN_FREE_BYTES=str(1 << 60)
    )
    out = tmp_path / "out"

    done = await export_cli(["floor", "--output", str(out), "--json"], env)

    assert done.returncode == 1
    assert "rfbatch: error: not enough free disk space" in done.stderr.decode()
    assert "export.min_free_bytes" in done.stderr.decode()
    assert summary_of(done)["stopped"].startswith("not enough free disk space")
    assert tree(out) == {}
    assert downloads(emulator) == 0


async def test_killed_midway_then_rerun_fetches_only_what_was_missing(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = images(80, size=20_000)
    await stage(emulator, tmp_path, "killed", files)
    out = tmp_path / "out"
    env = export_env(
        emulator.base_url,
        tmp_path / "state",
        RFBATCH_EXPORT__WORKERS="2",
        RFBATCH_EXPORT__PAGE_SIZE="10",
    )
    # Slow every download down so that the kill lands mid-run even on a fast machine.
    emulator.set_faults(FaultProfile(routes={"download": FaultRates(slow=1.0)}, slow_seconds=0.05))

    args = [*EXPORT_CLI, "killed", "--output", str(out)]
    async with await anyio.open_process(args, env=env, cwd=REPO) as proc:
        # Names only: a temporary file listed now may be renamed before it is read.
        await wait_for(
            lambda: len([n for n in files if (out / n).exists()]) >= 10, "ten results written"
        )
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    emulator.set_faults(None)
    had = {name: data for name, data in tree(out).items() if name in files}
    assert 10 <= len(had) < len(files), "the run finished before it could be killed"
    # A final name only ever holds a whole file.
    assert all(files[name] == data for name, data in had.items())
    before = await settled_downloads(emulator)

    done = await export_cli(["killed", "--output", str(out), "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    summary = summary_of(done)
    missing = len(files) - len(had)
    assert (summary["files_skipped"], summary["files_downloaded"]) == (len(had), missing)
    assert downloads(emulator) - before == missing
    # Complete, and the temporary files of the killed run are gone.
    assert tree(out) == files


async def test_progress_bar_on_a_terminal(emulator: Emulator, tmp_path: Path) -> None:
    await stage(emulator, tmp_path, "tty", images(12))
    env = export_env(emulator.base_url, tmp_path / "state", RFBATCH_LOG__LEVEL="warning")
    master, slave = pty.openpty()

    def read_all() -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return b"".join(chunks)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    try:
        args = [*EXPORT_CLI, "tty", "--output", str(tmp_path / "out")]
        async with await anyio.open_process(args, env=env, cwd=REPO, stderr=slave) as proc:
            os.close(slave)
            slave = -1
            screen = (await anyio.to_thread.run_sync(read_all)).decode(errors="replace")
            await proc.wait()
            assert proc.stdout is not None
            stdout = b"".join([chunk async for chunk in proc.stdout])
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)

    assert proc.returncode == 0, screen
    assert "tty: 12/12 files" in screen
    assert "downloaded 12 files" in stdout.decode()
