"""``rfbatch upload`` as a user runs it: a subprocess, its exit code, its JSON, its logs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from tests.conftest import API_KEY
from tests.e2e.support import (
    RFBATCH,
    cli_env,
    make_tree,
    received_digests,
    run_cli,
    sha,
)
from tests.waiting import wait_for


async def test_upload_json_summary_and_exit_code(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 120)
    env = cli_env(emulator, tmp_path / "state")

    done = await run_cli(["upload", str(src), "--batch", "cli-batch", "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["files_sent"] == 120
    assert summary["confirmed"] is True
    assert summary["bytes_sent"] == sum(len(d) for d in files.values())
    assert set(received_digests(emulator, "cli-batch")) == {sha(d) for d in files.values()}
    logs = done.stderr.decode()
    assert API_KEY not in logs
    assert any(json.loads(line).get("event") == "upload.shard" for line in logs.splitlines())

    again = await run_cli(["upload", str(src), "--batch", "cli-batch", "--json"], env)
    assert again.returncode == 0
    assert json.loads(again.stdout)["files_sent"] == 0


async def test_dry_run_lists_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 12)
    env = cli_env(emulator, tmp_path / "state")

    done = await run_cli(["upload", str(src), "--batch", "dry", "--dry-run", "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    listing = json.loads(done.stdout)
    assert listing["count"] == 12
    assert listing["bytes"] == sum(len(d) for d in files.values())
    assert "dry" not in emulator.state()["batches"]


async def test_usage_errors_exit_2_with_one_clear_line(emulator: Emulator, tmp_path: Path) -> None:
    env = cli_env(emulator, tmp_path / "state")
    src = tmp_path / "src"
    src.mkdir()

    bad_id = await run_cli(["upload", str(src), "--batch", "Bad Id"], env)
    missing = await run_cli(["upload", str(tmp_path / "nope"), "--batch", "ok"], env)

    assert bad_id.returncode == 2
    assert "invalid batch id 'Bad Id'" in bad_id.stderr.decode()
    assert missing.returncode == 2
    assert "is not a folder" in missing.stderr.decode()


async def test_bad_key_exits_3_without_leaking_it(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    env = cli_env(emulator, tmp_path / "state")
    env["ROBOFLOW_API_KEY"] = "wrong-key-7f3a9c"

    done = await run_cli(["upload", str(src), "--batch", "b"], env)

    assert done.returncode == 3
    out = done.stdout.decode() + done.stderr.decode()
    assert "wrong-key-7f3a9c" not in out
    assert "401" in out


async def test_killed_midway_then_rerun_loses_nothing(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 3000, size=20_000)
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_UPLOAD__SHARD_MAX_FILES"] = "100"
    env["RFBATCH_UPLOAD__SHARD_WORKERS"] = "2"
    args = [*RFBATCH, "upload", str(src), "--batch", "killed"]
    # Slow every PUT down so that the kill lands mid-run even on a fast machine.
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(slow=1.0)}, slow_seconds=0.2))

    async with await anyio.open_process(args, env=env) as proc:
        # Kill it once part of the data has arrived, but not all of it.
        await wait_for(
            lambda: len(received_digests(emulator, "killed")) >= 300,
            'len(received_digests(emulator, "killed")) >= 300',
        )
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    partial = len(received_digests(emulator, "killed"))
    assert partial < len(files), "the run finished before it could be killed"
    emulator.set_faults(None)

    done = await run_cli(["upload", str(src), "--batch", "killed", "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    digests = received_digests(emulator, "killed")
    assert set(digests) == {sha(d) for d in files.values()}
    # Only what was in flight at the kill may arrive twice: at most one shard per worker.
    twice = sum(1 for n in digests.values() if n > 1)
    assert twice <= 2 * 100


async def test_every_run_counts_each_file_once_and_reports_every_skip(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 6)
    (src / "empty.png").write_bytes(b"")
    (src / "link.png").symlink_to(src / "empty.png")
    (src / "scan.tif").write_bytes(b"II*\0")
    env = cli_env(emulator, tmp_path / "state")

    runs = [await run_cli(["upload", str(src), "--batch", "counted", "--json"], env) for _ in "12"]

    summaries = [json.loads(done.stdout) for done in runs]
    # The same skips, the same exit status, on the first run and on the rerun.
    assert [done.returncode for done in runs] == [1, 1]
    for summary in summaries:
        assert (summary["files_found"], summary["files_skipped"], summary["files_ignored"]) == (
            7,
            2,
            1,
        )
        assert sorted(Path(s["path"]).name for s in summary["skipped"]) == [
            "empty.png",
            "link.png",
        ]
    assert [s["files_sent"] for s in summaries] == [6, 0]
    assert [s["files_unchanged"] for s in summaries] == [0, 6]
