"""What a job start or restart request may hold; anything else is refused before a job exists.

Workflow jobs (``simple-image-processing-v1``, ``simple-video-processing-v1``) need an input
batch that exists, is not empty and holds the kind of file the job type reads; TRT compilation
jobs need a model id and known devices. Restart overrides may change only what
:data:`OVERRIDE_KEYS` names.
"""

from __future__ import annotations

import re
from typing import Any

from rfbatch.emulator.job_model import TRT_TYPE
from rfbatch.emulator.model import Store
from rfbatch.emulator.responses import Problem

JOB_ID_RE = re.compile(r"^[a-z0-9_-]{1,20}$")

WORKFLOW_TYPES = {
    "simple-image-processing-v1": "images",
    "simple-video-processing-v1": "videos",
}
TRT_DEVICES = frozenset({"nvidia-l4", "nvidia-t4", "nvidia-l40s"})
WORKFLOW_KEYS = frozenset(
    {
        "type",
        "jobInput",
        "computeConfiguration",
        "processingTimeoutSeconds",
        "maxParallelTasks",
        "maxImageFailureRate",
        "processingSpecification",
        "notificationsURL",
        "inferenceBackend",
    }
)
SPEC_KEYS = frozenset(
    {
        "type",
        "workspace",
        "workflowId",
        "workflowParameters",
        "imageInputName",
        "persistImagesOutputs",
        "imagesOutputsToBePersisted",
        "aggregationFormat",
        "maxVideoFPS",
        "imagesMetadataInputsMapping",
    }
)
OVERRIDE_KEYS = frozenset(
    {
        "type",
        "computeConfiguration",
        "maxParallelTasks",
        "processingTimeoutSeconds",
        "maxImageFailureRate",
    }
)


class JobRequestError(Problem):
    """The request is wrong; answered with ``status`` (400, or 409 for a conflicting repeat)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


def _require_obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise JobRequestError(f'"{key}" is required and must be an object')
    return value


def _check_rate(value: Any, key: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise JobRequestError(f'"{key}" must be a number between 0.0 and 1.0')


def _check_positive(value: Any, key: str, *, integer: bool) -> None:
    if value is None:
        return
    numeric = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not numeric or value <= 0:
        raise JobRequestError(f'"{key}" must be a positive {"integer" if integer else "number"}')


def _check_compute(compute: dict[str, Any]) -> None:
    if compute.get("type") not in ("compute-configuration-v2", "compute-configuration-v1"):
        raise JobRequestError('"computeConfiguration.type" must be "compute-configuration-v2"')
    if compute.get("machineType") not in (None, "cpu", "gpu"):
        raise JobRequestError('"computeConfiguration.machineType" must be "cpu" or "gpu"')
    _check_positive(compute.get("workersPerMachine"), "workersPerMachine", integer=True)


def _check_notifications_url(body: dict[str, Any]) -> None:
    url = body.get("notificationsURL")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise JobRequestError('"notificationsURL" must be an http(s) URL')


def validate_job(store: Store, job_id: str, body: Any) -> None:
    """Raise :class:`JobRequestError` unless ``body`` is a job the emulator can run."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise JobRequestError("job id must match ^[a-z0-9_-]{1,20}$")
    if not isinstance(body, dict):
        raise JobRequestError('"value" must be an object')
    job_type = body.get("type")
    if job_type == TRT_TYPE:
        if not isinstance(body.get("modelId"), str) or not body["modelId"]:
            raise JobRequestError('"modelId" is required')
        devices = body.get("compilationDevices")
        if not isinstance(devices, list) or not devices or not set(devices) <= TRT_DEVICES:
            raise JobRequestError(
                '"compilationDevices" must list devices from ' + str(sorted(TRT_DEVICES))
            )
        _check_notifications_url(body)
        return
    if job_type not in WORKFLOW_TYPES:
        raise JobRequestError('"value" does not match any of the allowed types')
    unknown = set(body) - WORKFLOW_KEYS
    if unknown:
        raise JobRequestError(f'"{sorted(unknown)[0]}" is not allowed')
    job_input = _require_obj(body, "jobInput")
    _check_compute(_require_obj(body, "computeConfiguration"))
    spec = _require_obj(body, "processingSpecification")
    if job_input.get("type") != "staging-batch-input-v1":
        raise JobRequestError('"jobInput.type" must be "staging-batch-input-v1"')
    if spec.get("type") != "workflows-processing-specification-v1":
        raise JobRequestError(
            '"processingSpecification.type" must be "workflows-processing-specification-v1"'
        )
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise JobRequestError(f'"processingSpecification.{sorted(unknown)[0]}" is not allowed')
    for key in ("workspace", "workflowId"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise JobRequestError(f'"processingSpecification.{key}" is required')
    if spec.get("aggregationFormat") not in (None, "csv", "jsonl"):
        raise JobRequestError('"aggregationFormat" must be "csv" or "jsonl"')
    _check_rate(body.get("maxImageFailureRate"), "maxImageFailureRate")
    _check_positive(body.get("processingTimeoutSeconds"), "processingTimeoutSeconds", integer=False)
    _check_positive(body.get("maxParallelTasks"), "maxParallelTasks", integer=True)
    _check_notifications_url(body)
    batch_id = job_input.get("batchId")
    if not isinstance(batch_id, str):
        raise JobRequestError('"jobInput.batchId" is required')
    batch = store.get(batch_id)
    if batch is None:
        raise JobRequestError(f"input batch {batch_id!r} does not exist")
    part = job_input.get("partName")
    if part is not None and not isinstance(part, str):
        raise JobRequestError('"jobInput.partName" must be a string')
    if batch.count(part) == 0:
        raise JobRequestError(f"input batch {batch_id!r} is empty")
    want = WORKFLOW_TYPES[job_type]
    if batch.batch_type != "multipart-batch" and batch.content_type != want:
        raise JobRequestError(
            f"job type {job_type!r} needs a batch of {want}, batch {batch_id!r} holds "
            f"{batch.content_type}"
        )


def validate_override(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise JobRequestError('"value" must be an object')
    if body.get("type") != "parameters-override-v1":
        raise JobRequestError('"type" must be "parameters-override-v1"')
    unknown = set(body) - OVERRIDE_KEYS
    if unknown:
        raise JobRequestError(f'"{sorted(unknown)[0]}" is not allowed')
    if "computeConfiguration" in body:
        compute = body["computeConfiguration"]
        if not isinstance(compute, dict):
            raise JobRequestError('"computeConfiguration" must be an object')
        _check_compute(compute)
    _check_rate(body.get("maxImageFailureRate"), "maxImageFailureRate")
    _check_positive(body.get("processingTimeoutSeconds"), "processingTimeoutSeconds", integer=False)
    _check_positive(body.get("maxParallelTasks"), "maxParallelTasks", integer=True)
    return body
