"""Starting and following jobs against the in-process emulator."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from rfbatch.api import RoboflowClient
from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.errors import ConflictError
from rfbatch.pipeline.jobs import (
    JobView,
    follow_job,
    job_spec_from,
    output_batches,
    start_job,
)
from rfbatch.settings import JobSettings
from rfbatch.state.manifest import SqliteManifest
from rfbatch.webhooks import WebhookReceiver, serve_webhooks
from tests.conftest import API_KEY, WORKSPACE
from tests.jobs.support import (
    WEBHOOK_BEARER,
    client_for,
    image_batch,
    stored_definition,
    video_batch,
)
from tests.waiting import wait_for

DEADLINE = 60.0


async def _start_image_job(
    client: RoboflowClient,
    job_id: str,
    *,
    workflow_id: str = "wf",
    images: int = 3,
    notifications_url: str | None = None,
) -> None:
    """Start ``job_id`` on a new batch ``imgs`` of ``images`` images."""
    await image_batch(client, "imgs", count=images)
    spec = job_spec_from(
        JobSettings(workflow_id=workflow_id),
        batch_id="imgs",
        kind="images",
        notifications_url=notifications_url,
    )
    await start_job(client, job_id, spec)


async def test_every_option_reaches_the_stored_definition(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with client_for(emulator, tmp_path) as (settings, client):
        await image_batch(client, "imgs")
        await video_batch(settings, client, "vids")
        images = job_spec_from(
            JobSettings(),
            batch_id="imgs",
            kind="images",
            workflow_id="wf-images",
            workflow_parameters={"confidence": 0.3, "classes": ["car"]},
            image_input_name="picture",
            machine_type="gpu",
            workers_per_machine=2,
            max_runtime_seconds=1800,
            max_parallel_tasks=3,
            max_image_failure_rate=0.05,
            aggregation_format="csv",
            persist_images_outputs=True,
            images_outputs_to_be_persisted=["crops", "overlay"],
            notifications_url="http://127.0.0.1:9/hook",
        )
        videos = job_spec_from(
            JobSettings(workflow_id="wf-videos"), batch_id="vids", kind="videos", max_video_fps=2.5
        )
        await start_job(client, "job-img", images, name="nightly images")
        await start_job(client, "job-vid", videos)
        names = {job.job_id: job.name async for job in client.list_jobs()}

    stored = stored_definition(emulator, "job-img")
    assert stored["type"] == "simple-image-processing-v1"
    assert stored["jobInput"] == {"type": "staging-batch-input-v1", "batchId": "imgs"}
    assert stored["computeConfiguration"] == {
        "type": "compute-configuration-v2",
        "machineType": "gpu",
        "workersPerMachine": 2,
    }
    assert stored["processingTimeoutSeconds"] == 1800
    assert stored["maxParallelTasks"] == 3
    assert stored["maxImageFailureRate"] == 0.05
    assert stored["notificationsURL"] == "http://127.0.0.1:9/hook"
    spec = stored["processingSpecification"]
    assert spec["workspace"] == WORKSPACE
    assert spec["workflowId"] == "wf-images"
    assert spec["workflowParameters"] == {"confidence": 0.3, "classes": ["car"]}
    assert spec["imageInputName"] == "picture"
    assert spec["aggregationFormat"] == "csv"
    assert spec["persistImagesOutputs"] is True
    assert spec["imagesOutputsToBePersisted"] == ["crops", "overlay"]
    video = stored_definition(emulator, "job-vid")
    assert video["type"] == "simple-video-processing-v1"
    assert video["processingSpecification"]["maxVideoFPS"] == 2.5
    assert names == {"job-img": "nightly images", "job-vid": "job-vid"}


async def test_a_repeated_start_is_idempotent_and_a_different_body_conflicts(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with client_for(emulator, tmp_path) as (_, client):
        await image_batch(client, "imgs")
        spec = job_spec_from(JobSettings(workflow_id="wf"), batch_id="imgs", kind="images")
        await start_job(client, "same-job", spec)
        await start_job(client, "same-job", spec)
        other = job_spec_from(JobSettings(workflow_id="other-wf"), batch_id="imgs", kind="images")
        with pytest.raises(ConflictError) as caught:
            await start_job(client, "same-job", other)
    message = str(caught.value)
    assert "'same-job'" in message
    assert "different definition" in message
    assert "\n" not in message
    assert list(emulator.state()["jobs"]) == ["same-job"]
    assert stored_definition(emulator, "same-job")["processingSpecification"]["workflowId"] == "wf"


async def test_follow_to_success_finds_the_output_batches(
    emulator: Emulator, tmp_path: Path
) -> None:
    views: list[JobView] = []
    async with client_for(emulator, tmp_path) as (_, client):
        await _start_image_job(client, "ok-job")
        outcome = await follow_job(
            client, "ok-job", poll_seconds=0.02, on_update=views.append, deadline_seconds=DEADLINE
        )
        listed = await output_batches(client, "ok-job")
        exported = await client.count("ok-job-export", part_name="results")
    assert outcome.succeeded
    assert not outcome.timed_out
    assert outcome.message is None
    assert outcome.output_batches == ("ok-job-export", "ok-job-processing")
    assert listed == ["ok-job-export", "ok-job-processing"]
    assert exported == 1
    assert outcome.job is not None
    assert outcome.job.is_terminal
    # The last view shows both stages complete; the live view was fed every poll.
    assert len(views) == outcome.polls
    last = views[-1]
    assert [s.stage_id for s in last.stages] == ["processing", "export"]
    assert all(s.tasks_done == s.tasks_total and s.progress == 1.0 for s in last.stages)


async def test_a_failed_job_gives_the_service_message(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator, tmp_path) as (_, client):
        await _start_image_job(client, "bad-job", workflow_id="fail-wf")
        outcome = await follow_job(client, "bad-job", poll_seconds=0.02, deadline_seconds=DEADLINE)
        job = await client.get_job("bad-job")
    assert not outcome.succeeded
    assert not outcome.timed_out
    assert isinstance(job.last_notification, dict)
    assert outcome.message == job.last_notification["message"]
    assert "fail-wf" in (outcome.message or "")
    assert outcome.output_batches == ()


async def test_the_wait_is_bounded_by_its_deadline(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, job_tick=30.0)
    async with running_emulator(config) as emu, client_for(emu, tmp_path) as (_, client):
        await _start_image_job(client, "slow-job", images=1)
        outcome = await follow_job(client, "slow-job", poll_seconds=0.02, deadline_seconds=0.3)
        await client.abort_job("slow-job")
    assert outcome.timed_out
    assert not outcome.succeeded
    assert outcome.state == "running"
    assert "slow-job" in (outcome.message or "")
    assert outcome.polls >= 1


async def test_a_job_webhook_wakes_the_follower_before_its_next_poll(tmp_path: Path) -> None:
    # The job never ends by itself (30 s ticks) and polls are an hour apart: only the webhook
    # sent when the test fails the job can end the wait, well inside the deadline.
    config = EmulatorConfig(api_key=API_KEY, workspace=WORKSPACE, job_tick=30.0)
    manifest = await SqliteManifest.open(tmp_path / "hooks")
    receiver = WebhookReceiver(WEBHOOK_BEARER, 64 * 1024, manifest.record_event)
    first_poll = anyio.Event()
    try:
        async with (
            running_emulator(config) as emu,
            client_for(emu, tmp_path) as (_, client),
            serve_webhooks(receiver, "127.0.0.1", 0) as url,
        ):
            await _start_image_job(client, "hooked", images=1, notifications_url=url)
            async with anyio.create_task_group() as tg:

                async def fail_after_first_poll() -> None:
                    await first_poll.wait()
                    emu.fail_job("hooked", "stopped by the test")

                tg.start_soon(fail_after_first_poll)
                with capture_logs() as logs:
                    outcome = await follow_job(
                        client,
                        "hooked",
                        poll_seconds=3600.0,
                        wake=receiver.job_waker("hooked"),
                        on_update=lambda _view: first_poll.set(),
                        deadline_seconds=DEADLINE,
                    )
    finally:
        await manifest.close()
    assert not outcome.timed_out
    assert outcome.message == "stopped by the test"
    assert (outcome.polls, outcome.wakeups) == (2, 1)
    [notice] = [e for e in logs if e["event"] == "webhook.job"]
    assert (notice["job"], notice["job_state"]) == ("hooked", "fail")
    assert receiver.statistics().accepted == 1


async def test_a_webhook_wakes_a_plain_event_once(emulator: Emulator, tmp_path: Path) -> None:
    # An anyio.Event cannot be cleared: after it fires the follower polls at its own pace.
    woken = anyio.Event()
    woken.set()
    async with client_for(emulator, tmp_path) as (_, client):
        await _start_image_job(client, "evt-job", images=1)
        outcome = await follow_job(
            client, "evt-job", poll_seconds=0.02, wake=woken, deadline_seconds=DEADLINE
        )
    assert outcome.succeeded
    assert outcome.wakeups == 1


async def test_a_lost_webhook_still_ends_by_polling(emulator: Emulator, tmp_path: Path) -> None:
    # The receiver expects another token, so every delivery is refused: the webhook is lost.
    manifest = await SqliteManifest.open(tmp_path / "hooks")
    receiver = WebhookReceiver("Bearer rf_someone-else", 64 * 1024, manifest.record_event)
    try:
        async with (
            client_for(emulator, tmp_path) as (_, client),
            serve_webhooks(receiver, "127.0.0.1", 0) as url,
        ):
            await _start_image_job(client, "lost-hook", images=1, notifications_url=url)
            outcome = await follow_job(
                client,
                "lost-hook",
                poll_seconds=0.05,
                wake=receiver.job_waker("lost-hook"),
                deadline_seconds=DEADLINE,
            )
            await wait_for(
                lambda: receiver.statistics().rejected.get("bad_authorization", 0) > 0,
                'receiver.statistics().rejected.get("bad_authorization", 0) > 0',
            )
    finally:
        await manifest.close()
    assert outcome.succeeded
    assert outcome.wakeups == 0
    assert outcome.output_batches == ("lost-hook-export", "lost-hook-processing")
    assert receiver.statistics().accepted == 0
