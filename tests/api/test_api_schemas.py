from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from rfbatch.api.schemas import (
    BatchMetadata,
    FileMetadata,
    ImageJobSpec,
    ImageReference,
    ImageReferencesIngest,
    JobMetadata,
    JobStage,
    RestartOverrides,
    ShardDetails,
    SignedUrlResponse,
    TaskStatus,
    TrtCompilationJobSpec,
    VideoJobSpec,
)

SIGNATURE = "deadbeefcafef00d"
SIGNED = f"https://storage.example/b/o.tar?X-Goog-Signature={SIGNATURE}&X-Goog-Expires=900"


def job(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jobId": "j1",
        "name": "job one",
        "jobDefinition": {"type": "simple-image-processing-v1"},
        "createdAt": "2026-01-01T00:00:00Z",
        "lastUpdate": "2026-01-01T00:01:00Z",
    }
    base.update(fields)
    return base


def test_batch_metadata_ignores_unknown_fields_and_reads_timestamps() -> None:
    batch = BatchMetadata.model_validate(
        {
            "displayName": "Cams",
            "batchId": "cams-1",
            "batchType": "sharded-batch",
            "batchContentType": "images",
            "createdDate": "2026-03-01T10:00:00+00:00",
            "expiryDate": "2026-03-08T10:00:00",
            "somethingNew": {"x": 1},
        }
    )
    assert batch.batch_id == "cams-1"
    assert batch.created_date == datetime(2026, 3, 1, 10, tzinfo=UTC)
    # A naive stamp is read as UTC rather than rejected.
    assert batch.expiry_date.tzinfo is not None


def test_file_metadata_accepts_both_url_spellings_and_hides_the_signature() -> None:
    for key in ("downloadURL", "downloadUrl"):
        meta = FileMetadata.model_validate(
            {key: SIGNED, "fileName": "a.jpg", "contentType": "image/jpeg", "partName": "p"}
        )
        assert meta.download_url == SIGNED
        assert SIGNATURE not in repr(meta)
        assert meta.part_name == "p"


def test_signed_url_response_tolerates_extras_and_missing_method() -> None:
    body = {
        "status": "ok",
        "signedURLDetails": {
            "uploadURL": SIGNED,
            "extensionHeaders": {"x-goog-content-length-range": "0,100"},
            "maxFileSize": 100,
        },
    }
    signed = SignedUrlResponse.model_validate(body).signed_url_details
    assert signed.method == "PUT"
    assert signed.max_file_size == 100
    assert signed.extension_headers == {"x-goog-content-length-range": "0,100"}
    assert SIGNATURE not in repr(signed)
    with_method = SignedUrlResponse.model_validate(
        {"signedURLDetails": {"uploadURL": SIGNED, "extensionHeaders": {}, "method": "POST"}}
    )
    assert with_method.signed_url_details.method == "POST"


def test_job_state_follows_is_terminal_and_error() -> None:
    running = JobMetadata.model_validate(job())
    assert running.is_running
    assert not running.succeeded
    assert not running.failed
    done = JobMetadata.model_validate(job(isTerminal=True, error=False))
    assert done.succeeded
    assert not done.is_running
    assert not done.failed
    failed = JobMetadata.model_validate(job(isTerminal=True, error=True, lastNotification="x"))
    assert failed.failed
    assert not failed.succeeded


def test_job_state_falls_back_to_gbdoc_status_only_without_is_terminal() -> None:
    completed = JobMetadata.model_validate(job(status="completed", progress=1.0))
    assert completed.succeeded
    failed = JobMetadata.model_validate(job(status="failed"))
    assert failed.failed
    pending = JobMetadata.model_validate(job(status="pending"))
    assert pending.is_running
    # When the CLI shape is there, it wins.
    still_running = JobMetadata.model_validate(job(status="completed", isTerminal=False))
    assert still_running.is_running


def test_stage_and_task_status_types() -> None:
    stage = JobStage.model_validate(
        {
            "processingStageId": "s1",
            "processingStageName": "processing",
            "tasksNumber": 2,
            "outputBatches": ["j1-processing"],
            "startTimestamp": "2026-01-01T00:00:00Z",
            "notification": {},
            "statusType": "info",
            "lastEventTimestamp": "2026-01-01T00:00:00Z",
        }
    )
    assert stage.is_running
    task = TaskStatus.model_validate(
        {
            "taskId": "t",
            "notification": "done",
            "statusType": "task-success",
            "progress": None,
            "eventTimestamp": "2026-01-01T00:00:00Z",
        }
    )
    assert task.succeeded
    assert not task.failed
    assert not task.is_running
    shard = ShardDetails.model_validate(
        {
            "shardId": "s",
            "statusName": "bad",
            "statusType": "shard-error",
            "eventTimestamp": "2026-01-01T00:00:00Z",
            "shardObjectsCount": 0,
        }
    )
    assert shard.failed


def test_image_job_spec_carries_every_option_camel_cased() -> None:
    spec = ImageJobSpec(
        batch_id="in-1",
        workflow_id="wf",
        workflow_parameters={"confidence": 0.5},
        image_input_name="picture",
        machine_type="gpu",
        workers_per_machine=4,
        max_runtime_seconds=3600,
        max_parallel_tasks=8,
        max_image_failure_rate=0.25,
        aggregation_format="jsonl",
        persist_images_outputs=True,
        images_outputs_to_be_persisted=["vis"],
        notifications_url="https://hooks.example/job",
        part_name="images",
        images_metadata_part="meta",
        images_metadata_inputs_mapping={"camera": "cam_id"},
        inference_backend="inference-models",
    )
    assert spec.to_wire("ws") == {
        "type": "simple-image-processing-v1",
        "jobInput": {
            "type": "staging-batch-input-v1",
            "batchId": "in-1",
            "partName": "images",
            "imagesMetadataPart": "meta",
        },
        "computeConfiguration": {
            "type": "compute-configuration-v2",
            "machineType": "gpu",
            "workersPerMachine": 4,
        },
        "processingTimeoutSeconds": 3600,
        "maxParallelTasks": 8,
        "maxImageFailureRate": 0.25,
        "processingSpecification": {
            "type": "workflows-processing-specification-v1",
            "workspace": "ws",
            "workflowId": "wf",
            "workflowParameters": {"confidence": 0.5},
            "imageInputName": "picture",
            "persistImagesOutputs": True,
            "imagesOutputsToBePersisted": ["vis"],
            "aggregationFormat": "jsonl",
            "imagesMetadataInputsMapping": {"camera": "cam_id"},
        },
        "notificationsURL": "https://hooks.example/job",
        "inferenceBackend": "inference-models",
    }


def test_minimal_specs_leave_unset_options_out_but_keep_false() -> None:
    assert VideoJobSpec(batch_id="v", workflow_id="wf", max_video_fps=5).to_wire("ws") == {
        "type": "simple-video-processing-v1",
        "jobInput": {"type": "staging-batch-input-v1", "batchId": "v"},
        "computeConfiguration": {"type": "compute-configuration-v2"},
        "processingSpecification": {
            "type": "workflows-processing-specification-v1",
            "workspace": "ws",
            "workflowId": "wf",
            "maxVideoFPS": 5.0,
        },
    }
    wire = ImageJobSpec(batch_id="b", workflow_id="wf", persist_images_outputs=False).to_wire("w")
    assert wire["processingSpecification"]["persistImagesOutputs"] is False


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_failure_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValidationError):
        ImageJobSpec(batch_id="b", workflow_id="wf", max_image_failure_rate=rate)


def test_video_spec_has_no_image_only_options() -> None:
    with pytest.raises(ValidationError):
        VideoJobSpec(batch_id="b", workflow_id="wf", max_image_failure_rate=0.1)  # type: ignore[call-arg]


def test_trt_spec() -> None:
    spec = TrtCompilationJobSpec(model_id="m/1", compilation_devices=["nvidia-l4"])
    assert spec.to_wire("ignored") == {
        "type": "trt-compilation-v1",
        "modelId": "m/1",
        "compilationDevices": ["nvidia-l4"],
    }


def test_restart_overrides() -> None:
    assert RestartOverrides().to_wire() is None
    assert RestartOverrides(max_parallel_tasks=2).to_wire() == {
        "type": "parameters-override-v1",
        "maxParallelTasks": 2,
    }
    assert RestartOverrides(
        machine_type="cpu",
        workers_per_machine=2,
        max_parallel_tasks=3,
        max_runtime_seconds=600,
        max_image_failure_rate=0.1,
    ).to_wire() == {
        "type": "parameters-override-v1",
        "computeConfiguration": {
            "type": "compute-configuration-v2",
            "machineType": "cpu",
            "workersPerMachine": 2,
        },
        "maxParallelTasks": 3,
        "processingTimeoutSeconds": 600,
        "maxImageFailureRate": 0.1,
    }


def test_references_ingest_body_and_repr() -> None:
    ref = ImageReference(name="a.jpg", url=SIGNED)
    assert SIGNATURE not in repr(ref)
    body = ImageReferencesIngest(
        image_references=[ref],
        ingest_id="ing-1",
        notifications_url="https://hooks.example/i",
        notification_categories=["files-status"],
    ).to_wire()
    assert body == {
        "imageReferences": [{"name": "a.jpg", "url": SIGNED}],
        "ingestId": "ing-1",
        "notificationsURL": "https://hooks.example/i",
        "notificationCategories": ["files-status"],
    }
    assert ImageReferencesIngest(image_references_url="https://x/refs.jsonl").to_wire() == {
        "imageReferencesURL": "https://x/refs.jsonl"
    }
