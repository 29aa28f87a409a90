"""``rfbatch sync``: the closed loop against the emulator (issue: jobs and results)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from tests.e2e.support import RFBATCH, cli_env, make_tree, result_records, run_cli
from tests.waiting import wait_for


def _sync_env(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment, with jobs polled often so that syncs end soon after their job."""
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_JOB__POLL_SECONDS"] = "0.05"
    return env


async def test_sync_of_images_ends_with_every_result_on_disk(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 120)
    env = _sync_env(emulator, tmp_path)
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--workflow", "wf", "--output", str(out), "--json"], env
    )

    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["complete"] is True
    assert summary["upload"]["files_sent"] == 120
    (job,) = summary["jobs"]
    assert job["state"] == "succeeded"
    assert len(result_records(out)) == 120
    # Archives from the export stage were unpacked, and no temporary file is left behind.
    assert not list(out.rglob("*.tar.gz"))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]

    again = await run_cli(
        ["sync", str(src), "--workflow", "wf", "--output", str(out), "--json"], env
    )
    assert again.returncode == 0, again.stderr.decode()
    rerun = json.loads(again.stdout)
    assert rerun["upload"]["files_sent"] == 0
    assert sum(e["files_downloaded"] for e in rerun["export"]["batches"]) == 0


async def test_sync_of_videos(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "clips"
    src.mkdir()
    for i in range(3):
        (src / f"cam{i}.mp4").write_bytes(os.urandom(200_000 + i))
    env = _sync_env(emulator, tmp_path)
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--batch", "clips", "--workflow", "wf", "--output", str(out), "--json"],
        env,
    )

    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["upload"]["videos"] == 3
    assert [j["batch_id"] for j in summary["jobs"]] == ["clips-videos"]
    assert len(result_records(out)) == 3


async def test_a_failed_job_exits_1_with_the_service_message(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 10)
    env = _sync_env(emulator, tmp_path)

    done = await run_cli(
        ["sync", str(src), "--workflow", "fail-me", "--output", str(tmp_path / "out")], env
    )

    assert done.returncode == 1
    assert "failed" in done.stdout.decode()
    assert "pass --job-id NEW to run it again" in done.stderr.decode()
    job = next(iter(emulator.state()["jobs"].values()))
    assert job["state"] == "failed"


async def test_without_workflow_sync_uploads_and_confirms_only(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 10)
    done = await run_cli(["sync", str(src), "--json"], cli_env(emulator, tmp_path / "state"))
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["upload"]["confirmed"] is True
    assert summary["jobs"] == []
    assert not emulator.state()["jobs"]


async def test_killed_during_download_then_rerun_fetches_nothing_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 60)
    env = _sync_env(emulator, tmp_path)
    out = tmp_path / "results"
    args = ["sync", str(src), "--workflow", "wf", "--output", str(out)]
    # Slow downloads down so the kill lands while results are being fetched.
    emulator.set_faults(FaultProfile(routes={"download": FaultRates(slow=1.0)}, slow_seconds=1.0))

    async with await anyio.open_process([*RFBATCH, *args], env=env) as proc:
        await wait_for(
            lambda: emulator.state()["counters"]["downloads"] >= 1,
            'emulator.state()["counters"]["downloads"] >= 1',
            timeout=120,
        )
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    emulator.set_faults(None)

    # Requests the killed run sent are still asleep in the emulator's slow fault; each is counted
    # as a download when it wakes, so wait until every delayed request has been.
    def settled() -> bool:
        counters = emulator.state()["counters"]
        return bool(counters["downloads"] >= counters["faultsInjected"])

    await wait_for(settled, "settled", timeout=60)
    fetched_before = emulator.state()["counters"]["downloads"]

    done = await run_cli([*args, "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["complete"] is True
    assert len(result_records(out)) == 60
    fetched_after = emulator.state()["counters"]["downloads"]
    # Each output file is fetched once in all: what the killed run finished is not fetched again.
    assert fetched_after - fetched_before == sum(
        e["files_downloaded"] for e in summary["export"]["batches"]
    )
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


async def test_job_id_names_the_jobs_and_a_bad_one_is_refused_before_any_work(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "mixed"
    make_tree(src, 4)
    (src / "clip.mp4").write_bytes(os.urandom(50_000))
    env = _sync_env(emulator, tmp_path)
    out = tmp_path / "results"

    bad = await run_cli(
        ["sync", str(src), "--workflow", "wf", "-o", str(out), "--job-id", "No!"], env
    )
    assert bad.returncode == 2
    assert bad.stderr.decode().strip().splitlines() == [
        "rfbatch: error: invalid job id 'No!': use 1-20 characters from a-z, 0-9, '-' and '_'"
    ]
    assert emulator.state()["counters"]["puts"] == 0

    done = await run_cli(
        ["sync", str(src), "--workflow", "wf", "-o", str(out), "--job-id", "nightly-7", "--json"],
        env,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert set(emulator.state()["jobs"]) == {"nightly-7", "nightly-7-videos"}
    assert len(result_records(out)) == 5
