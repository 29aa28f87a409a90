"""Job definitions from settings and flags, and the progress arithmetic of contract section 6."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from rfbatch.api.schemas import ImageJobSpec, JobStage, TaskStatus, VideoJobSpec
from rfbatch.errors import ConfigError
from rfbatch.pipeline.jobs import job_spec_from, stage_view
from rfbatch.settings import JobSettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _wire(spec: ImageJobSpec | VideoJobSpec) -> dict[str, Any]:
    return spec.to_wire("ws")


def test_every_image_option_reaches_its_wire_name() -> None:
    spec = job_spec_from(
        JobSettings(),
        batch_id="in-1",
        kind="images",
        workflow_id="wf",
        workflow_parameters={"conf": 0.4},
        image_input_name="frame",
        machine_type="gpu",
        workers_per_machine=4,
        max_runtime_seconds=3600,
        max_parallel_tasks=7,
        max_image_failure_rate=0.25,
        aggregation_format="csv",
        persist_images_outputs=True,
        images_outputs_to_be_persisted=["crops"],
        notifications_url="http://127.0.0.1:9/webhook",
        part_name="part-a",
    )
    assert isinstance(spec, ImageJobSpec)
    assert _wire(spec) == {
        "type": "simple-image-processing-v1",
        "jobInput": {"type": "staging-batch-input-v1", "batchId": "in-1", "partName": "part-a"},
        "computeConfiguration": {
            "type": "compute-configuration-v2",
            "machineType": "gpu",
            "workersPerMachine": 4,
        },
        "processingTimeoutSeconds": 3600,
        "maxParallelTasks": 7,
        "maxImageFailureRate": 0.25,
        "processingSpecification": {
            "type": "workflows-processing-specification-v1",
            "workspace": "ws",
            "workflowId": "wf",
            "workflowParameters": {"conf": 0.4},
            "imageInputName": "frame",
            "persistImagesOutputs": True,
            "imagesOutputsToBePersisted": ["crops"],
            "aggregationFormat": "csv",
        },
        "notificationsURL": "http://127.0.0.1:9/webhook",
    }


def test_settings_are_the_defaults_and_flags_win() -> None:
    settings = JobSettings(
        workflow_id="from-config",
        machine_type="cpu",
        max_parallel_tasks=2,
        max_video_fps=5.0,
        max_image_failure_rate=0.1,
    )
    images = _wire(job_spec_from(settings, batch_id="b", kind="images", max_parallel_tasks=9))
    assert images["processingSpecification"]["workflowId"] == "from-config"
    assert images["computeConfiguration"]["machineType"] == "cpu"
    assert images["maxParallelTasks"] == 9
    assert images["maxImageFailureRate"] == 0.1
    # The config's video frame cap is a default for video jobs, not an error on image jobs.
    assert "maxVideoFPS" not in images["processingSpecification"]
    videos = _wire(job_spec_from(settings, batch_id="b", kind="videos"))
    assert videos["type"] == "simple-video-processing-v1"
    # Whole numbers go out as integers, as the official client sends them.
    assert json.dumps(videos["processingSpecification"]["maxVideoFPS"]) == "5"
    fractional = _wire(job_spec_from(settings, batch_id="b", kind="videos", max_video_fps=2.5))
    assert fractional["processingSpecification"]["maxVideoFPS"] == 2.5
    assert "maxImageFailureRate" not in videos


def test_empty_defaults_are_left_out_so_equal_intent_gives_equal_bodies() -> None:
    spec = job_spec_from(JobSettings(workflow_id="wf"), batch_id="b", kind="images")
    body = _wire(spec)
    assert body["processingSpecification"] == {
        "type": "workflows-processing-specification-v1",
        "workspace": "ws",
        "workflowId": "wf",
        "persistImagesOutputs": False,
    }
    assert body["computeConfiguration"] == {"type": "compute-configuration-v2"}
    again = job_spec_from(
        JobSettings(workflow_id="wf"), batch_id="b", kind="images", workflow_parameters={}
    )
    assert _wire(again) == body


@pytest.mark.parametrize(
    ("kind", "overrides", "names"),
    [
        ("images", {}, "workflow"),
        ("images", {"workflow_id": "wf", "max_video_fps": 5.0}, "max_video_fps"),
        ("videos", {"workflow_id": "wf", "max_image_failure_rate": 0.5}, "max_image_failure_rate"),
        ("images", {"workflow_id": "wf", "max_image_failure_rate": 1.5}, "max_image_failure_rate"),
        ("images", {"workflow_id": "wf", "workers_per_machine": 0}, "workers_per_machine"),
        ("images", {"workflow_id": "wf", "max_runtime_seconds": 0}, "max_runtime_seconds"),
        ("images", {"workflow_id": "wf", "machine_type": "tpu"}, "machine_type"),
        ("images", {"workflow_id": "wf", "aggregation_format": "xml"}, "aggregation_format"),
        ("images", {"workflow_id": "wf", "colour": "red"}, "colour"),
        ("audio", {"workflow_id": "wf"}, "kind"),
    ],
)
def test_invalid_options_name_the_option(kind: Any, overrides: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        job_spec_from(JobSettings(), batch_id="b", kind=kind, **overrides)


def test_the_batch_id_is_validated() -> None:
    with pytest.raises(ConfigError, match="batch id"):
        job_spec_from(JobSettings(workflow_id="wf"), batch_id="Bad Batch", kind="images")


def _stage(status: str = "info", tasks_number: int = 4) -> JobStage:
    return JobStage(
        processing_stage_id="processing",
        processing_stage_name="processing",
        tasks_number=tasks_number,
        output_batches=[],
        start_timestamp=NOW,
        notification={},
        status_type=status,
        last_event_timestamp=NOW,
    )


def _task(n: int, status: str, progress: float | None) -> TaskStatus:
    return TaskStatus(
        task_id=f"t{n}",
        notification={},
        status_type=status,
        progress=progress,
        event_timestamp=NOW,
    )


def test_stage_progress_counts_terminal_tasks_as_done_and_null_as_not_registered() -> None:
    tasks = [
        _task(0, "success", 0.2),  # terminal: counts 1 whatever its progress says
        _task(1, "error", None),  # terminal and failed
        _task(2, "info", 0.5),
        _task(3, "info", None),  # not registered yet: 0
    ]
    view = stage_view(_stage(), tasks)
    assert (view.tasks_done, view.tasks_total, view.tasks_failed) == (2, 4, 1)
    assert view.progress == pytest.approx((1 + 1 + 0.5 + 0) / 4)


def test_a_terminal_stage_without_its_tasks_listed_is_complete() -> None:
    view = stage_view(_stage("success", tasks_number=3), None)
    assert (view.tasks_done, view.tasks_total, view.progress) == (3, 3, 1.0)
    running = stage_view(_stage("info", tasks_number=3), None)
    assert (running.tasks_done, running.progress) == (0, 0.0)
