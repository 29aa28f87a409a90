"""``rfbatch job ...`` as a user runs it: a subprocess against the in-process emulator."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream

from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.ids import job_id_for_batch
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import cli_env, make_tree, run_cli, run_env
from tests.jobs.support import (
    JOB_CLI,
    client_for,
    free_port,
    image_batch,
    job_cli,
    job_cli_all,
    stored_definition,
    video_batch,
)


def _env(emulator: Emulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_JOB__POLL_SECONDS"] = "0.05"
    env.update(extra)
    return env


async def _env_with_images(
    emulator: Emulator, tmp_path: Path, batch: str, **extra: str
) -> dict[str, str]:
    """The CLI's environment once the emulator holds the image batch ``batch``."""
    async with client_for(emulator, tmp_path) as (_, client):
        await image_batch(client, batch)
    return _env(emulator, tmp_path, **extra)


def _json(done: subprocess.CompletedProcess[bytes]) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def test_start_sends_every_option_with_its_wire_name(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with client_for(emulator, tmp_path) as (settings, client):
        await image_batch(client, "imgs")
        await video_batch(settings, client, "vids")
    env = _env(emulator, tmp_path)
    images = await job_cli(
        [
            "start",
            "--batch", "imgs",
            "--job-id", "all-options",
            "--workflow", "wf-1",
            "--param", "confidence=0.4",
            "--param", 'classes=["car","dog"]',
            "--param", "label=plain text",
            "--image-input", "picture",
            "--machine-type", "gpu",
            "--workers-per-machine", "2",
            "--max-runtime-seconds", "1800",
            "--max-parallel-tasks", "3",
            "--max-image-failure-rate", "0.05",
            "--aggregation-format", "csv",
            "--persist-images-outputs",
            "--persist-output", "crops",
            "--persist-output", "overlay",
            "--notifications-url", "http://127.0.0.1:9/hook",
            "--name", "nightly run",
            "--json",
        ],
        env,
    )  # fmt: skip
    shown = _json(images)
    videos = await job_cli(
        ["start", "--batch", "vids", "--videos", "--workflow", "wf-v", "--max-video-fps", "2.5"],
        env,
    )
    assert videos.returncode == 0, videos.stderr.decode()

    stored = stored_definition(emulator, "all-options")
    assert shown["jobId"] == "all-options"
    assert shown["name"] == "nightly run"
    assert shown["jobDefinition"] == stored
    assert stored == {
        "type": "simple-image-processing-v1",
        "jobInput": {"type": "staging-batch-input-v1", "batchId": "imgs"},
        "computeConfiguration": {
            "type": "compute-configuration-v2",
            "machineType": "gpu",
            "workersPerMachine": 2,
        },
        "processingTimeoutSeconds": 1800,
        "maxParallelTasks": 3,
        "maxImageFailureRate": 0.05,
        "processingSpecification": {
            "type": "workflows-processing-specification-v1",
            "workspace": WORKSPACE,
            "workflowId": "wf-1",
            "workflowParameters": {
                "confidence": 0.4,
                "classes": ["car", "dog"],
                "label": "plain text",
            },
            "imageInputName": "picture",
            "persistImagesOutputs": True,
            "imagesOutputsToBePersisted": ["crops", "overlay"],
            "aggregationFormat": "csv",
        },
        "notificationsURL": "http://127.0.0.1:9/hook",
    }
    video = stored_definition(emulator, job_id_for_batch("vids"))
    assert video["type"] == "simple-video-processing-v1"
    assert video["processingSpecification"]["maxVideoFPS"] == 2.5


async def test_the_official_clients_option_names_are_accepted(
    emulator: Emulator, tmp_path: Path
) -> None:
    # inference-cli's --workflow-params is the path of a JSON document, in job start and sync.
    params = tmp_path / "params.json"
    params.write_text('{"confidence": 0.5, "classes": ["car"]}')
    env = await _env_with_images(emulator, tmp_path, "aliases")
    started = await job_cli(
        [
            "start",
            "--batch-id", "aliases",
            "--job-id", "aliased",
            "--workflow-id", "wf-a",
            "--workflow-params", str(params),
            "--image-input-name", "picture",
            "--job-name", "same names",
        ],
        env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr.decode()
    spec = stored_definition(emulator, "aliased")["processingSpecification"]
    assert spec["workflowId"] == "wf-a"
    assert spec["workflowParameters"] == {"confidence": 0.5, "classes": ["car"]}
    assert spec["imageInputName"] == "picture"
    assert _json(await job_cli(["status", "aliased", "--json"], env))["name"] == "same names"

    src = tmp_path / "src"
    make_tree(src, 2)
    synced = await run_cli(
        [
            "sync", str(src),
            "--batch", "synced",
            "--job-id", "synced-job",
            "--workflow-id", "wf-s",
            "--workflow-params", str(params),
            "--image-input-name", "picture",
            "--output", str(tmp_path / "out"),
        ],
        env,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr.decode()
    spec = stored_definition(emulator, "synced-job")["processingSpecification"]
    assert spec["workflowId"] == "wf-s"
    assert spec["workflowParameters"] == {"confidence": 0.5, "classes": ["car"]}
    assert spec["imageInputName"] == "picture"
    # And its short flags: -b batch, -w workflow, -j job.
    short = await job_cli(["start", "-b", "aliases", "-j", "short", "-w", "wf-short"], env)
    assert short.returncode == 0, short.stderr.decode()
    spec = stored_definition(emulator, "short")["processingSpecification"]
    assert spec["workflowId"] == "wf-short"


async def test_workflow_parameters_come_the_same_three_ways_to_start_and_sync(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A file, then a JSON object, then KEY=VALUE pairs: each later one wins key by key.
    params = tmp_path / "params.json"
    params.write_text('{"a": 1, "b": 1, "c": 1}')
    given = ["--workflow-params", str(params), "--workflow-parameters", '{"b": 2, "c": 2}']
    given += ["--param", "c=3"]
    expected = {"a": 1, "b": 2, "c": 3}
    env = await _env_with_images(emulator, tmp_path, "three-ways")
    start = ["start", "--batch", "three-ways", "--job-id", "three", "--workflow", "w", *given]
    assert (await job_cli(start, env)).returncode == 0
    src = tmp_path / "src"
    make_tree(src, 1)
    sync = ["sync", str(src), "--batch", "s3", "--job-id", "s3-job", "--workflow", "w", *given]
    synced = await run_cli([*sync, "--output", str(tmp_path / "out")], env)
    assert synced.returncode == 0, synced.stderr.decode()
    for job in ("three", "s3-job"):
        spec = stored_definition(emulator, job)["processingSpecification"]
        assert spec["workflowParameters"] == expected, job

    # A file that is missing, not JSON or not an object stops either command before any work.
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{confidence: 0.5")
    faults = {
        str(tmp_path / "missing.json"): "cannot read",
        str(tmp_path / "list.json"): "holds a JSON array, not an object",
        str(tmp_path / "bad.json"): "is not JSON",
    }
    for path, says in faults.items():
        for args in (
            ["job", "start", "--batch", "three-ways", "--workflow", "w"],
            ["sync", str(src), "--batch", "never", "--workflow", "w", "-o", str(tmp_path / "o")],
        ):
            done = await run_cli([*args, "--workflow-params", path], env)
            err = done.stderr.decode().strip()
            assert done.returncode == 2, err
            assert len(err.splitlines()) == 1, err
            assert err.startswith("rfbatch: error: --workflow-params: "), err
            assert path in err
            assert says in err
    assert "never" not in emulator.state()["batches"]


async def test_a_derived_job_id_makes_a_retried_start_idempotent(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = await _env_with_images(emulator, tmp_path, "nightly-2026-01-01")
    args = ["start", "--batch", "nightly-2026-01-01", "--workflow", "wf", "--json"]
    first, second = await job_cli(args, env), await job_cli(args, env)
    expected = job_id_for_batch("nightly-2026-01-01")
    assert _json(first)["jobId"] == _json(second)["jobId"] == expected
    assert list(emulator.state()["jobs"]) == [expected]

    other = await job_cli(["start", "--batch", "nightly-2026-01-01", "--workflow", "other"], env)
    assert other.returncode == 3
    message = other.stderr.decode().strip()
    assert expected in message
    assert "different definition" in message
    assert len(message.splitlines()) == 1
    assert stored_definition(emulator, expected)["processingSpecification"]["workflowId"] == "wf"


async def test_usage_errors_exit_2_before_any_call(tmp_path: Path) -> None:
    # Nothing listens at the API URL: a command that called it would fail with exit 3 instead.
    env = run_env(
        f"http://127.0.0.1:{free_port()}", tmp_path / "state", RFBATCH_API__RETRY_ATTEMPTS="1"
    )
    cases = {
        "no workflow id": ["start", "--batch", "imgs"],
        "--max-video-fps applies": [
            "start",
            "--batch",
            "imgs",
            "--workflow",
            "w",
            "--max-video-fps",
            "5",
        ],
        "invalid job id": ["start", "--batch", "imgs", "--workflow", "w", "--job-id", "Bad ID"],
        "invalid batch id": ["start", "--batch", "Imgs!", "--workflow", "w"],
        "KEY=VALUE": ["start", "--batch", "imgs", "--workflow", "w", "--param", "novalue"],
        # A bad flag value is named by its flag (checked by the parser, before any call).
        "'--max-image-failure-rate'": ["restart", "some-job", "--max-image-failure-rate", "2"],
        "'--machine-type'": ["restart", "some-job", "--machine-type", "tpu"],
        "--severity": ["logs", "some-job", "--severity", "debug"],
        "--webhook-listen": ["wait", "some-job", "--webhook-listen", "nowhere"],
        "invalid job id ": ["status", "Not/A/Job"],
    }
    results = await job_cli_all(list(cases.values()), env)
    for (expected, args), done in zip(cases.items(), results, strict=True):
        stderr = done.stderr.decode()
        assert done.returncode == 2, (args, stderr)
        assert expected.strip() in stderr, (args, stderr)
    no_key = await job_cli(["status", "some-job"], {**env, "ROBOFLOW_API_KEY": ""})
    assert no_key.returncode == 2
    assert "no API key" in no_key.stderr.decode()


async def test_wait_succeeds_and_the_job_can_be_inspected(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = await _env_with_images(emulator, tmp_path, "imgs")
    assert (
        await job_cli(["start", "--batch", "imgs", "--job-id", "j1", "--workflow", "w"], env)
    ).returncode == 0

    waited = _json(await job_cli(["wait", "j1", "--json", "--timeout", "60"], env))
    assert waited["state"] == "succeeded"
    assert waited["output_batches"] == ["j1-export", "j1-processing"]
    assert waited["job"]["isTerminal"] is True

    runs = await job_cli_all(
        [
            ["status", "j1", "--json"],
            ["stages", "j1", "--json"],
            ["tasks", "j1", "processing", "--json"],
            ["logs", "j1", "--json"],
            ["logs", "j1", "--severity", "error", "--json"],
            ["list", "--json"],
            ["wait", "j1"],
        ],
        env,
    )
    status, stages, tasks, logs, errors, listed = (_json(done) for done in runs[:6])
    assert (status["jobId"], status["isTerminal"], status["error"]) == ("j1", True, False)
    assert status["plannedStages"] == ["processing", "export"]
    assert [(s["processingStageId"], s["statusType"]) for s in stages] == [
        ("processing", "success"),
        ("export", "success"),
    ]
    assert stages[0]["outputBatches"] == ["j1-processing"]
    assert [(t["taskId"], t["statusType"], t["progress"]) for t in tasks] == [
        ("processing-task-0000", "success", 1.0)
    ]
    assert {"job-created", "stage-started", "job-succeeded"} <= {e["logType"] for e in logs}
    assert errors == []
    assert [j["jobId"] for j in listed] == ["j1"]
    plain = runs[6]
    assert plain.returncode == 0
    assert "j1-export" in plain.stdout.decode()


async def test_a_failed_job_makes_wait_exit_1_with_the_service_message(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = await _env_with_images(emulator, tmp_path, "imgs")
    started = await job_cli(
        ["start", "--batch", "imgs", "--job-id", "bad", "--workflow", "fail-x"], env
    )
    assert started.returncode == 0
    waited = await job_cli(["wait", "bad"], env)
    assert waited.returncode == 1
    assert emulator.state()["jobs"]["bad"]["state"] == "failed"
    stderr = waited.stderr.decode()
    assert "job bad failed" in stderr
    assert "Workflow 'fail-x' failed on task processing-task-0000" in stderr
    errors = _json(await job_cli(["logs", "bad", "--severity", "error", "--json"], env))
    assert "task-failed" in {e["logType"] for e in errors}
    assert {e["severity"] for e in errors} == {"error"}

    missing = await job_cli(["wait", "no-such-job"], env)
    assert missing.returncode == 3


async def test_abort_restart_with_overrides_and_a_wait_timeout(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, job_tick=30.0)
    async with running_emulator(config) as emu:
        async with client_for(emu, tmp_path) as (_, client):
            await image_batch(client, "imgs", count=1)
        env = _env(emu, tmp_path)
        start = ["start", "--batch", "imgs", "--job-id", "long", "--workflow", "w"]
        assert (await job_cli(start, env)).returncode == 0

        timed_out = await job_cli(["wait", "long", "--timeout", "0.5", "--json"], env)
        assert timed_out.returncode == 1
        assert json.loads(timed_out.stdout)["timed_out"] is True
        assert "timed out" in timed_out.stderr.decode()

        assert (await job_cli(["abort", "long"], env)).returncode == 0
        assert emu.state()["jobs"]["long"]["state"] == "aborted"
        restart = [
            "restart", "long",
            "--machine-type", "gpu",
            "--workers-per-machine", "3",
            "--max-parallel-tasks", "2",
            "--max-runtime-seconds", "600",
            "--max-image-failure-rate", "0.2",
            "--json",
        ]  # fmt: skip
        _json(await job_cli(restart, env))
        job = emu.state()["jobs"]["long"]
        assert job["state"] == "running"
        assert job["restartParametersOverride"] == [
            {
                "type": "parameters-override-v1",
                "computeConfiguration": {
                    "type": "compute-configuration-v2",
                    "machineType": "gpu",
                    "workersPerMachine": 3,
                },
                "maxParallelTasks": 2,
                "processingTimeoutSeconds": 600,
                "maxImageFailureRate": 0.2,
            }
        ]
        # Whole seconds, as an integer on the wire (the official client's type).
        assert type(job["restartParametersOverride"][0]["processingTimeoutSeconds"]) is int
        status = _json(await job_cli(["status", "long", "--json"], env))
        assert status["restartParametersOverride"] == job["restartParametersOverride"]
        # A restart without overrides sends no body; one of a running job is refused (API error).
        assert (await job_cli(["restart", "long"], env)).returncode == 3
        assert (await job_cli(["abort", "long", "--json"], env)).returncode == 0
        assert (await job_cli(["restart", "long"], env)).returncode == 0
        assert len(emu.state()["jobs"]["long"]["restartParametersOverride"]) == 1
        await job_cli(["abort", "long"], env)


async def _read_until(stream: TextReceiveStream, needle: str, seen: list[str]) -> None:
    with anyio.fail_after(60):
        async for text in stream:
            seen.append(text)
            if needle in "".join(seen):
                return
    raise AssertionError(f"{needle!r} never appeared in {''.join(seen)!r}")


async def test_wait_with_a_webhook_listener_wakes_on_the_notification(tmp_path: Path) -> None:
    # The job never ends by itself and polls are an hour apart: only the webhook can end the
    # wait before its 60 s timeout, once the test fails the job.
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, job_tick=30.0)
    port = free_port()
    async with running_emulator(config) as emu:
        async with client_for(emu, tmp_path) as (_, client):
            await image_batch(client, "imgs", count=1)
        env = _env(emu, tmp_path, RFBATCH_JOB__POLL_SECONDS_WITH_WEBHOOK="3600")
        hook_url = f"http://127.0.0.1:{port}/webhook"
        start = ["start", "--batch", "imgs", "--job-id", "hooked", "--workflow", "w"]
        assert (await job_cli([*start, "--notifications-url", hook_url], env)).returncode == 0
        args = ["wait", "hooked", "--webhook-listen", f"127.0.0.1:{port}", "--json"]
        async with await anyio.open_process([*JOB_CLI, *args, "--timeout", "60"], env=env) as proc:
            assert proc.stderr is not None
            assert proc.stdout is not None
            seen: list[str] = []
            await _read_until(TextReceiveStream(proc.stderr), "job.following", seen)
            emu.fail_job("hooked", "stopped by the test")
            out = b"".join([chunk async for chunk in proc.stdout])
            async for text in TextReceiveStream(proc.stderr):
                seen.append(text)
            with anyio.fail_after(60):
                code = await proc.wait()
    stderr = "".join(seen)
    assert code == 1, stderr
    result = json.loads(out)
    assert result["message"] == "stopped by the test"
    assert result["timed_out"] is False
    assert (result["polls"], result["webhook_wakeups"]) == (2, 1)
    assert "rf_test-ws" not in stderr
    assert '"webhook.job"' in stderr


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the job CLI with stderr on a pseudo-terminal; return its exit code and that output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*JOB_CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closes when the child exits
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


async def test_wait_shows_a_live_view_on_a_terminal(emulator: Emulator, tmp_path: Path) -> None:
    env = await _env_with_images(
        emulator, tmp_path, "imgs", RFBATCH_LOG__FORMAT="console", COLUMNS="120"
    )
    start = ["start", "--batch", "imgs", "--job-id", "tty-job", "--workflow", "w"]
    assert (await job_cli(start, env)).returncode == 0
    code, shown = await anyio.to_thread.run_sync(_run_on_a_terminal, ["wait", "tty-job"], env)
    assert code == 0, shown
    assert "tty-job processing" in shown
    assert "tty-job export" in shown
    assert "1/1 tasks" in shown
    assert "100.0%" in shown


async def test_abort_of_an_ended_job_says_so_and_changes_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = await _env_with_images(emulator, tmp_path, "done-imgs")
    start = ["start", "--batch", "done-imgs", "--job-id", "ended", "--workflow", "w"]
    assert (await job_cli(start, env)).returncode == 0
    assert (await job_cli(["wait", "ended"], env)).returncode == 0

    human = await job_cli(["abort", "ended"], env)
    assert human.returncode == 0, human.stderr.decode()
    assert "had already ended (succeeded)" in human.stdout.decode()
    assert "aborted" not in human.stdout.decode().replace("nothing to abort", "")
    answer = _json(await job_cli(["abort", "ended", "--json"], env))
    assert answer == {
        "schema_version": 1,
        "job_id": "ended",
        "aborted": False,
        "state": "succeeded",
    }
    assert emulator.state()["jobs"]["ended"]["state"] != "aborted"
