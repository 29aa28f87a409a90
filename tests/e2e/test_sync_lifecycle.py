"""``sync`` drives its batches through the daemon's steps, recorded in the manifest."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from structlog.testing import capture_logs

from rfbatch.app import Services, open_services
from rfbatch.emulator import Emulator, EmulatorConfig, running_emulator
from rfbatch.ids import job_id_for_batch
from rfbatch.pipeline.batches import InFlight
from rfbatch.pipeline.lifecycle import Lifecycle
from rfbatch.pipeline.sync import SyncResult, sync
from rfbatch.pipeline.upload_pass import UploadTarget, source_specs
from rfbatch.settings import Settings
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import make_tree, result_records, settings_for
from tests.waiting import wait_for

TARGET = UploadTarget(image_batch="imgs", video_batch="imgs-videos")


def job_settings(emulator: Emulator, tmp_path: Path) -> Settings:
    return settings_for(
        emulator, tmp_path / "state", job={"workflow_id": "wf", "poll_seconds": 0.05}
    )


async def run_sync(services: Services, src: Path, output: Path) -> SyncResult:
    specs = source_specs(services, [str(src)])
    return await sync(services, specs, TARGET, output_dir=output)


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_each_step_is_recorded_and_each_job_event_logged_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 20)
    settings = job_settings(emulator, tmp_path)
    with capture_logs() as logs:
        async with open_services(settings) as services:
            result = await run_sync(services, src, tmp_path / "out")
            row = await services.manifest.get_batch("imgs")

    assert result.complete
    assert row is not None
    assert (row.state, row.job_id) == ("exported", job_id_for_batch("imgs"))
    assert list(result.jobs) == ["imgs"]
    assert [e["job"] for e in events(logs, "job.started")] == [job_id_for_batch("imgs")]
    assert [e["job"] for e in events(logs, "job.done")] == [job_id_for_batch("imgs")]
    assert len(events(logs, "batch.exported")) == 1


async def test_a_rerun_follows_the_started_job_and_never_starts_it_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 20)
    out = tmp_path / "out"
    # A slow job clock: the first run is stopped while the job is still running.
    emu_config = EmulatorConfig(
        api_key=API_KEY, workspace=WORKSPACE, state_dir=tmp_path / "emu", job_tick=0.5
    )
    async with running_emulator(emu_config) as emulator:
        settings = job_settings(emulator, tmp_path)
        async with open_services(settings) as services, anyio.create_task_group() as tg:

            async def job_started() -> bool:
                row = await services.manifest.get_batch("imgs")
                return row is not None and row.state == "job_started"

            async def stop_once_the_job_runs() -> None:
                await wait_for(job_started, "the job to start")
                tg.cancel_scope.cancel()

            tg.start_soon(stop_once_the_job_runs)
            await run_sync(services, src, out)
            raise AssertionError("the first run ended before its job did")
        assert emulator.state()["jobs"][job_id_for_batch("imgs")]["state"] == "running"

        with capture_logs() as logs:
            async with open_services(settings) as services:
                rerun = await run_sync(services, src, out)
                row = await services.manifest.get_batch("imgs")

    assert rerun.complete
    assert rerun.upload.tally.sent == 0
    assert rerun.jobs["imgs"].succeeded
    assert row is not None
    assert row.state == "exported"
    assert not events(logs, "job.started")
    assert len(events(logs, "job.done")) == 1
    assert len(result_records(out)) == 20


async def test_a_failed_job_is_reported_again_by_a_rerun_not_run_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 5)
    settings = settings_for(
        emulator, tmp_path / "state", job={"workflow_id": "fail-me", "poll_seconds": 0.05}
    )
    async with open_services(settings) as services:
        first = await run_sync(services, src, tmp_path / "out")
        failed = await services.manifest.get_batch("imgs")
    with capture_logs() as logs:
        async with open_services(settings) as services:
            rerun = await run_sync(services, src, tmp_path / "out")

    assert failed is not None
    assert failed.state == "failed"
    for result in (first, rerun):
        assert not result.complete
        assert result.jobs["imgs"].state == "failed"
        assert result.jobs["imgs"].message == first.jobs["imgs"].message
    assert not events(logs, "job.started")
    assert len(emulator.state()["jobs"]) == 1


async def test_a_corrected_workflow_runs_as_a_new_job_without_uploading_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 5)
    out = tmp_path / "out"

    def with_workflow(workflow: str) -> Settings:
        return settings_for(
            emulator, tmp_path / "state", job={"workflow_id": workflow, "poll_seconds": 0.05}
        )

    async with open_services(with_workflow("fail-me")) as services:
        first = await run_sync(services, src, out)
    with capture_logs() as logs:
        async with open_services(with_workflow("wf-fixed")) as services:
            second = await run_sync(services, src, out)
            row = await services.manifest.get_batch("imgs")

    assert first.jobs["imgs"].state == "failed"
    assert second.complete, second.jobs
    assert second.upload.tally.sent == 0  # nothing uploaded again
    old = job_id_for_batch("imgs")
    [replaced] = events(logs, "job.replaced")
    assert (replaced["job"], replaced["next_job"]) == (old, row.job_id if row else None)
    assert row is not None
    assert row.state == "exported"
    new = row.job_id
    assert new is not None
    assert new != old
    jobs = emulator.state()["jobs"]
    assert (jobs[old]["state"], jobs[new]["state"]) == ("failed", "succeeded")
    # The new job's results are on disk, in folders of their own.
    assert len(result_records(out / "imgs")) == 5
    assert all(p.name.startswith(new) for p in (out / "imgs").iterdir())

    # Run again with the same corrected workflow: the new job is followed, not started again.
    with capture_logs() as logs:
        async with open_services(with_workflow("wf-fixed")) as services:
            third = await run_sync(services, src, out)
    assert third.complete
    assert not events(logs, "job.started")
    assert not events(logs, "job.replaced")
    assert len(emulator.state()["jobs"]) == 2


async def test_a_sealed_batch_with_nothing_sent_ends_empty_not_failed(
    emulator: Emulator, tmp_path: Path
) -> None:
    # What a drain cut short before any file went out leaves behind: a sealed batch, no files.
    settings = job_settings(emulator, tmp_path)
    with capture_logs() as logs:
        async with open_services(settings) as services:
            await services.manifest.create_batch("drained", "images")
            await services.manifest.update_batch("drained", state="sealed")
            await Lifecycle(services, InFlight()).advance("drained")
            row = await services.manifest.get_batch("drained")

    assert row is not None
    assert (row.state, row.info) == ("empty", {})
    assert [e["batch"] for e in events(logs, "batch.empty")] == ["drained"]
    assert "drained" not in emulator.state()["batches"]  # the service never heard of it
