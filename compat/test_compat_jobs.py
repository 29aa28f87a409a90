"""inference-cli `rf-cloud batch-processing` commands (and multipart exports) on the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from compat.support import (
    API_KEY,
    WORKSPACE,
    Cli,
    Receiver,
    files_under,
    make_images,
    make_videos,
    wait_count,
    wait_job,
)
from rfbatch.emulator import EmulatorConfig, emulator_in_thread
from tests.waiting import wait_for_sync


def _images_batch(cli: Cli, tmp_path: Path, batch: str, count: int = 3) -> dict[str, bytes]:
    images = make_images(tmp_path / batch, count)
    cli.run(
        "data-staging",
        "create-batch-of-images",
        "--images-dir",
        str(tmp_path / batch),
        "--batch-id",
        batch,
    )
    wait_count(cli.emulator, batch, count)
    return images


def test_process_images_then_inspect_and_export_results(
    cli: Cli, tmp_path: Path, receiver: Receiver
) -> None:
    images = _images_batch(cli, tmp_path, "job-input")
    cli.run(
        "batch-processing",
        "process-images-with-workflow",
        "--batch-id",
        "job-input",
        "--workflow-id",
        "count-cars",
        "--job-id",
        "img-job",
        "--job-name",
        "Nightly cars",
        "--machine-type",
        "gpu",
        "--workers-per-machine",
        "2",
        "--max-image-failure-rate",
        "0.25",
        "--aggregation-format",
        "jsonl",
        "--notifications-url",
        receiver.url,
    )
    job = cli.emulator.state()["jobs"]["img-job"]
    definition = job["definition"]
    assert definition["type"] == "simple-image-processing-v1"
    assert definition["jobInput"] == {"type": "staging-batch-input-v1", "batchId": "job-input"}
    assert definition["computeConfiguration"]["machineType"] == "gpu"
    assert definition["computeConfiguration"]["workersPerMachine"] == 2
    assert definition["maxImageFailureRate"] == 0.25
    assert definition["notificationsURL"] == receiver.url
    spec = definition["processingSpecification"]
    assert (spec["workspace"], spec["workflowId"], spec["aggregationFormat"]) == (
        WORKSPACE,
        "count-cars",
        "jsonl",
    )
    wait_job(cli.emulator, "img-job", "succeeded")
    wait_for_sync(lambda: bool(receiver.bodies()), "the job webhook")
    [(headers, hook)] = receiver.received
    assert headers["Authorization"] == f"Bearer rf_{WORKSPACE}"
    assert (hook["job_id"], hook["job_state"]) == ("img-job", "success")

    listed = cli.run("batch-processing", "list-jobs").stdout
    assert "img-job" in listed
    shown = cli.run("batch-processing", "show-job-details", "--job-id", "img-job").stdout
    assert "img-job" in shown
    assert "processing" in shown
    assert "export" in shown

    logs_file = tmp_path / "logs.jsonl"
    cli.run(
        "batch-processing", "fetch-logs", "--job-id", "img-job", "--output-file", str(logs_file)
    )
    logs = [json.loads(line) for line in logs_file.read_text().splitlines() if line]
    assert any(entry["log_type"] == "job-succeeded" for entry in logs)
    errors_file = tmp_path / "errors.jsonl"
    cli.run(
        "batch-processing",
        "fetch-logs",
        "--job-id",
        "img-job",
        "--log-severity",
        "error",
        "--output-file",
        str(errors_file),
    )
    assert errors_file.read_text().strip() == ""

    # multipart exports: the processing batch's results and the export batch's archives
    details = cli.run("data-staging", "show-batch-details", "--batch-id", "img-job-export").stdout
    assert "results" in details
    processing_dir = tmp_path / "processing"
    cli.run(
        "data-staging",
        "export-batch",
        "--batch-id",
        "img-job-processing",
        "--target-dir",
        str(processing_dir),
    )
    results = files_under(processing_dir)
    assert list(results) == ["results/results-0000.jsonl"]
    records = [json.loads(line) for line in results["results/results-0000.jsonl"].splitlines()]
    assert sorted(r["file_name"] for r in records) == sorted(images)
    export_dir = tmp_path / "export"
    cli.run(
        "data-staging",
        "export-batch",
        "--batch-id",
        "img-job-export",
        "--target-dir",
        str(export_dir),
        "--part-name",
        "results",
    )
    assert files_under(export_dir) == results  # the .tar.gz was unpacked into identical bytes

    content_file = tmp_path / "content.jsonl"
    cli.run(
        "data-staging",
        "list-batch-content",
        "--batch-id",
        "img-job-export",
        "--part-name",
        "results",
        "--output-file",
        str(content_file),
    )
    [entry] = [json.loads(line) for line in content_file.read_text().splitlines() if line]
    assert entry["file_name"] == "results-0000.jsonl.tar.gz"
    assert entry["part_name"] == "results"


def test_process_videos_with_workflow(cli: Cli, tmp_path: Path, compat_python: Path) -> None:
    make_videos(compat_python, tmp_path / "videos")
    cli.run(
        "data-staging",
        "create-batch-of-videos",
        "--videos-dir",
        str(tmp_path / "videos"),
        "--batch-id",
        "vid-input",
    )
    cli.run(
        "batch-processing",
        "process-videos-with-workflow",
        "--batch-id",
        "vid-input",
        "--workflow-id",
        "track-people",
        "--job-id",
        "vid-job",
        "--max-video-fps",
        "5",
        "--aggregation-format",
        "csv",
    )
    definition = cli.emulator.state()["jobs"]["vid-job"]["definition"]
    assert definition["type"] == "simple-video-processing-v1"
    assert definition["processingSpecification"]["maxVideoFPS"] == 5
    wait_job(cli.emulator, "vid-job", "succeeded")
    target = tmp_path / "out"
    cli.run(
        "data-staging", "export-batch", "--batch-id", "vid-job-export", "--target-dir", str(target)
    )
    [(name, data)] = files_under(target).items()
    assert name == "results/results-0000.csv"
    assert data.decode().count("clip-") == 2


@pytest.fixture
def slow_cli(inference_bin: Path, tmp_path: Path) -> Iterator[Cli]:
    """Jobs that stay running long enough for a CLI call to catch them (a 1 s tick)."""
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, job_tick=1.0)
    with emulator_in_thread(config) as emu:
        yield Cli(inference_bin, emu, tmp_path)


def test_abort_and_restart_job(slow_cli: Cli, tmp_path: Path) -> None:
    cli = slow_cli
    _images_batch(cli, tmp_path, "abort-input", count=2)
    cli.run(
        "batch-processing",
        "process-images-with-workflow",
        "--batch-id",
        "abort-input",
        "--workflow-id",
        "slow-workflow",
        "--job-id",
        "abort-me",
    )
    cli.run("batch-processing", "abort-job", "--job-id", "abort-me")
    assert cli.emulator.state()["jobs"]["abort-me"]["state"] == "aborted"
    cli.run("batch-processing", "abort-job", "--job-id", "abort-me")  # idempotent
    shown = cli.run("batch-processing", "show-job-details", "--job-id", "abort-me").stdout
    assert "abort-me" in shown
    cli.run(
        "batch-processing",
        "restart-job",
        "--job-id",
        "abort-me",
        "--machine-type",
        "gpu",
        "--max-parallel-tasks",
        "3",
    )
    job = cli.emulator.state()["jobs"]["abort-me"]
    assert job["state"] == "running"
    [override] = job["restartParametersOverride"]
    assert override["type"] == "parameters-override-v1"
    assert override["computeConfiguration"]["machineType"] == "gpu"
    assert override["maxParallelTasks"] == 3
    cli.run("batch-processing", "abort-job", "--job-id", "abort-me")
    cli.run("batch-processing", "restart-job", "--job-id", "abort-me")  # no overrides: no body
    assert len(cli.emulator.state()["jobs"]["abort-me"]["restartParametersOverride"]) == 1
    wait_job(cli.emulator, "abort-me", "succeeded")


def test_restart_failed_job(cli: Cli, tmp_path: Path) -> None:
    _images_batch(cli, tmp_path, "fail-input", count=1)
    cli.run(
        "batch-processing",
        "process-images-with-workflow",
        "--batch-id",
        "fail-input",
        "--workflow-id",
        "fail-always",
        "--job-id",
        "fails",
    )
    wait_job(cli.emulator, "fails", "failed")
    logs_file = tmp_path / "errors.jsonl"
    cli.run(
        "batch-processing",
        "fetch-logs",
        "--job-id",
        "fails",
        "--log-severity",
        "error",
        "--output-file",
        str(logs_file),
    )
    errors = [json.loads(line) for line in logs_file.read_text().splitlines() if line]
    assert errors
    assert all(e["severity"] == "error" for e in errors)
    cli.run(
        "batch-processing", "restart-job", "--job-id", "fails", "--max-image-failure-rate", "0.5"
    )
    overrides = cli.emulator.state()["jobs"]["fails"]["restartParametersOverride"]
    assert overrides == [{"type": "parameters-override-v1", "maxImageFailureRate": 0.5}]
    wait_job(cli.emulator, "fails", "failed")
