"""Wire models of the Roboflow Batch Processing / Data Staging API (contract sections 2 to 5).

These describe JSON exactly as it travels, camelCase and all; nothing here is a domain type.
Responses are read no more strictly than the official client reads them: unknown fields are
ignored, numbers where text is expected are taken as text, where the contract's section 12 names
two spellings either is accepted, and a field rfbatch can do without (``Lenient``) that comes
missing, null or of another type is read as absent instead of failing the answer. Only what the
work needs (ids, names, the upload URL, counts) must be there and well formed. Request models
serialise with ``exclude_none`` so that unset options are left out, as the reference client does.

Signed URLs are secrets until they expire, so models that hold one show it redacted in ``repr``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.alias_generators import to_camel

from rfbatch.redact import redact_url


def _assume_utc(value: datetime) -> datetime:
    # The contract promises zone-aware stamps; a naive one is read as UTC rather than rejected.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_assume_utc)]


def _or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _or_empty_list(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return []


def _or_empty_dict(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return {}


def _http_method(value: Any) -> str:
    # What to send the body with: the signed URL's method when it names one rfbatch can use.
    method = value.strip().upper() if isinstance(value, str) else ""
    return method if method in ("PUT", "POST", "PATCH") else "PUT"


def _byte_count(value: Any) -> int | None:
    # A size limit taken only when it is a whole positive number of bytes: true, -5 or 0 would
    # make every body "too large".
    return value if type(value) is int and value > 0 else None


# A field rfbatch can do without: absent when missing, null or of another type.
LenientStr = Annotated[str | None, WrapValidator(_or_none)]
LenientInt = Annotated[int | None, WrapValidator(_or_none)]
LenientFloat = Annotated[float | None, WrapValidator(_or_none)]
LenientBool = Annotated[bool | None, WrapValidator(_or_none)]
LenientDict = Annotated[dict[str, Any] | None, WrapValidator(_or_none)]
LenientNotice = Annotated[dict[str, Any] | str | None, WrapValidator(_or_none)]
LenientTime = Annotated[Timestamp | None, WrapValidator(_or_none)]
# Collections that default to empty when missing or malformed.
LenientStrList = Annotated[list[str], WrapValidator(_or_empty_list)]
LenientDictList = Annotated[list[dict[str, Any]], WrapValidator(_or_empty_list)]
LenientPayload = Annotated[dict[str, Any], WrapValidator(_or_empty_dict)]
MachineType = Literal["cpu", "gpu"]
AggregationFormat = Literal["csv", "jsonl"]
InferenceBackend = Literal["old-inference", "inference-models"]
NotificationCategory = Literal["ingest-status", "files-status"]


class WireModel(BaseModel):
    """A response body: camelCase on the wire, snake_case in Python, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        coerce_numbers_to_str=True,
    )


class RequestModel(BaseModel):
    """A request body: unknown fields are a programming error, so they are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON body as sent: camelCase keys, ``None`` left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- workspace and data staging -------------------------------------------------------------


class WorkspaceInfo(WireModel):
    workspace: str


class BatchMetadata(WireModel):
    display_name: str
    batch_id: str
    batch_type: str
    batch_content_type: str
    created_date: Timestamp
    expiry_date: Timestamp


class BatchResponse(WireModel):
    batch: BatchMetadata


class CountResponse(WireModel):
    count: int


class PartMetadata(WireModel):
    part_name: str
    part_type: str
    content_type: str
    part_description: LenientStr = None
    nested_content_type: LenientStr = None


class PartsResponse(WireModel):
    batch_parts: list[PartMetadata]


class FileMetadata(WireModel):
    download_url: str = Field(validation_alias=AliasChoices("downloadURL", "downloadUrl"))
    file_name: str
    content_type: str
    part_name: LenientStr = None
    shard_id: LenientStr = None
    nested_content_type: LenientStr = None

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "download_url" else value


class ShardDetails(WireModel):
    shard_id: str
    status_name: str
    status_type: str
    event_timestamp: Timestamp
    shard_objects_count: int
    status_metadata: LenientDict = None

    @property
    def failed(self) -> bool:
        """A ``statusType`` containing "error" marks a failed shard (contract section 6)."""
        return "error" in self.status_type.lower()


class SignedUrl(WireModel):
    """Where to PUT one object, and the headers the signature requires verbatim."""

    upload_url: str = Field(validation_alias=AliasChoices("uploadURL", "uploadUrl"))
    extension_headers: Annotated[dict[str, str], WrapValidator(_or_empty_dict)] = Field(
        default_factory=dict
    )
    method: Annotated[str, BeforeValidator(_http_method)] = Field(
        default="PUT", validate_default=True
    )
    # GB-DOC mentions a size limit whose name is cut off at "maxFileSi…"; take the likely names.
    # Used when it is a whole positive number of bytes; ignored otherwise.
    max_file_size: Annotated[int | None, BeforeValidator(_byte_count)] = Field(
        default=None, validation_alias=AliasChoices("maxFileSize", "maxFileSizeBytes")
    )

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "upload_url" else value


class SignedUrlResponse(WireModel):
    signed_url_details: SignedUrl = Field(
        validation_alias=AliasChoices("signedURLDetails", "signedUrlDetails")
    )


class IngestResult(WireModel):
    ingest_id: str
    shard_ids: Annotated[list[str] | None, WrapValidator(_or_none)] = None
    duplicated: LenientBool = None


class ImageReference(RequestModel):
    """One image the server fetches itself: a file name and a URL it may download."""

    name: str
    url: str

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value


VideoReference = ImageReference


class ImageReferencesIngest(RequestModel):
    image_references: list[ImageReference] | None = None
    image_references_url: str | None = Field(default=None, alias="imageReferencesURL")
    ingest_id: str | None = None
    notifications_url: str | None = Field(default=None, alias="notificationsURL")
    notification_categories: list[NotificationCategory] | None = None


class VideoReferencesIngest(RequestModel):
    video_references: list[VideoReference] | None = None
    video_references_url: str | None = Field(default=None, alias="videoReferencesURL")
    ingest_id: str | None = None
    notifications_url: str | None = Field(default=None, alias="notificationsURL")
    notification_categories: list[NotificationCategory] | None = None


# --- batch processing ------------------------------------------------------------------------

_GBDOC_TERMINAL = {"completed": False, "failed": True}


class JobMetadata(WireModel):
    job_id: str
    name: str
    job_definition: LenientPayload = Field(default_factory=dict)
    current_stage: LenientStr = None
    planned_stages: Annotated[list[str] | None, WrapValidator(_or_none)] = None
    error: bool = False
    is_terminal: bool = False
    last_notification: LenientNotice = None
    created_at: Timestamp
    last_update: Timestamp
    restart_parameters_override: LenientDictList = Field(default_factory=list)
    # GB-DOC / SKILLS shape (section 12.1): optional; used only when isTerminal is absent. The
    # official client reads neither.
    status: LenientStr = None
    progress: LenientFloat = None

    def _gbdoc_outcome(self) -> bool | None:
        if "is_terminal" in self.model_fields_set or self.status is None:
            return None
        return _GBDOC_TERMINAL.get(self.status.lower())

    @property
    def terminal(self) -> bool:
        outcome = self._gbdoc_outcome()
        return self.is_terminal if outcome is None else True

    @property
    def is_running(self) -> bool:
        return not self.terminal

    @property
    def failed(self) -> bool:
        outcome = self._gbdoc_outcome()
        if outcome is not None:
            return outcome
        return self.is_terminal and self.error

    @property
    def succeeded(self) -> bool:
        return self.terminal and not self.failed


class JobResponse(WireModel):
    job: JobMetadata


class _StatusTyped(WireModel):
    status_type: str

    @property
    def is_running(self) -> bool:
        """``statusType`` "info" means still running; anything else is terminal (section 6)."""
        return self.status_type.lower() == "info"

    @property
    def succeeded(self) -> bool:
        return not self.is_running and "success" in self.status_type.lower()

    @property
    def failed(self) -> bool:
        return not self.is_running and "error" in self.status_type.lower()


class JobStage(_StatusTyped):
    processing_stage_id: str
    processing_stage_name: str
    tasks_number: int
    output_batches: LenientStrList = Field(default_factory=list)
    start_timestamp: Timestamp
    notification: LenientNotice = None
    last_event_timestamp: Timestamp


class StagesResponse(WireModel):
    stages: list[JobStage]


class TaskStatus(_StatusTyped):
    task_id: str
    notification: LenientNotice = None
    progress: LenientFloat = None
    event_timestamp: Timestamp


class LogEntry(WireModel):
    created_at: Timestamp
    processing_stage_id: LenientStr = None
    task_id: LenientStr = None
    # Any word the service uses: the known four are a filter's vocabulary, not a schema.
    severity: str
    reporting_module: str
    log_type: str
    payload: LenientPayload = Field(default_factory=dict)


# --- pages -----------------------------------------------------------------------------------


class BatchesPage(WireModel):
    batches: list[BatchMetadata]
    next_page_token: str | None = None


class FilesPage(WireModel):
    files_metadata: list[FileMetadata]
    next_page_token: str | None = None


class ShardsPage(WireModel):
    shards: list[ShardDetails]
    next_page_token: str | None = None


class JobsPage(WireModel):
    jobs: list[JobMetadata]
    next_page_token: str | None = None


class TasksPage(WireModel):
    tasks: list[TaskStatus]
    next_page_token: str | None = None


class LogsPage(WireModel):
    logs: list[LogEntry]
    next_page_token: str | None = None


# --- job requests ----------------------------------------------------------------------------


class StagingBatchInput(RequestModel):
    type: Literal["staging-batch-input-v1"] = "staging-batch-input-v1"
    batch_id: str
    part_name: str | None = None
    images_metadata_part: str | None = None


class ComputeConfiguration(RequestModel):
    type: Literal["compute-configuration-v2"] = "compute-configuration-v2"
    machine_type: MachineType | None = None
    workers_per_machine: int | None = None


class ProcessingSpecification(RequestModel):
    type: Literal["workflows-processing-specification-v1"] = "workflows-processing-specification-v1"
    workspace: str
    workflow_id: str
    workflow_parameters: dict[str, Any] | None = None
    image_input_name: str | None = None
    persist_images_outputs: bool | None = None
    images_outputs_to_be_persisted: list[str] | None = None
    aggregation_format: AggregationFormat | None = None
    # An integer on the wire when it is whole, as the official client sends it.
    max_video_fps: int | float | None = Field(default=None, alias="maxVideoFPS")
    images_metadata_inputs_mapping: dict[str, str] | None = None


class WorkflowProcessingJob(RequestModel):
    """``WorkflowProcessingJobV1``, the body of ``POST /jobs/{jobId}``, nested as on the wire."""

    type: Literal["simple-image-processing-v1", "simple-video-processing-v1"]
    job_input: StagingBatchInput
    compute_configuration: ComputeConfiguration
    processing_timeout_seconds: int | None = None
    max_parallel_tasks: int | None = None
    max_image_failure_rate: float | None = None
    processing_specification: ProcessingSpecification
    notifications_url: str | None = Field(default=None, alias="notificationsURL")
    inference_backend: InferenceBackend | None = None


class _JobSpecBase(BaseModel):
    """The options of a workflow job (contract 5.3), flat, as a person thinks of them.

    :meth:`to_wire` nests them into the ``WorkflowProcessingJobV1`` body. ``max_runtime_seconds``
    is the CLI flag's name; it travels as ``processingTimeoutSeconds`` (section 12.2).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str
    workflow_id: str = Field(min_length=1)
    workflow_parameters: dict[str, Any] | None = None
    image_input_name: str | None = None
    machine_type: MachineType | None = None
    workers_per_machine: int | None = Field(default=None, ge=1)
    max_runtime_seconds: int | None = Field(default=None, gt=0)
    max_parallel_tasks: int | None = Field(default=None, ge=1)
    aggregation_format: AggregationFormat | None = None
    persist_images_outputs: bool | None = None
    images_outputs_to_be_persisted: list[str] | None = None
    notifications_url: str | None = None
    part_name: str | None = None
    inference_backend: InferenceBackend | None = None

    job_type: Literal["simple-image-processing-v1", "simple-video-processing-v1"]

    def _wire_extras(self) -> dict[str, Any]:
        return {}

    def to_wire(self, workspace: str) -> dict[str, Any]:
        extras = self._wire_extras()
        job = WorkflowProcessingJob(
            type=self.job_type,
            job_input=StagingBatchInput(
                batch_id=self.batch_id,
                part_name=self.part_name,
                images_metadata_part=extras.get("images_metadata_part"),
            ),
            compute_configuration=ComputeConfiguration(
                machine_type=self.machine_type, workers_per_machine=self.workers_per_machine
            ),
            processing_timeout_seconds=self.max_runtime_seconds,
            max_parallel_tasks=self.max_parallel_tasks,
            max_image_failure_rate=extras.get("max_image_failure_rate"),
            processing_specification=ProcessingSpecification(
                workspace=workspace,
                workflow_id=self.workflow_id,
                workflow_parameters=self.workflow_parameters,
                image_input_name=self.image_input_name,
                persist_images_outputs=self.persist_images_outputs,
                images_outputs_to_be_persisted=self.images_outputs_to_be_persisted,
                aggregation_format=self.aggregation_format,
                max_video_fps=whole(extras.get("max_video_fps")),
                images_metadata_inputs_mapping=extras.get("images_metadata_inputs_mapping"),
            ),
            notifications_url=self.notifications_url,
            inference_backend=self.inference_backend,
        )
        return job.to_wire()


class ImageJobSpec(_JobSpecBase):
    job_type: Literal["simple-image-processing-v1"] = "simple-image-processing-v1"
    max_image_failure_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    images_metadata_part: str | None = None
    images_metadata_inputs_mapping: dict[str, str] | None = None

    def _wire_extras(self) -> dict[str, Any]:
        return {
            "max_image_failure_rate": self.max_image_failure_rate,
            "images_metadata_part": self.images_metadata_part,
            "images_metadata_inputs_mapping": self.images_metadata_inputs_mapping,
        }


class VideoJobSpec(_JobSpecBase):
    job_type: Literal["simple-video-processing-v1"] = "simple-video-processing-v1"
    max_video_fps: float | None = Field(default=None, gt=0)

    def _wire_extras(self) -> dict[str, Any]:
        return {"max_video_fps": self.max_video_fps}


class TrtCompilationJobSpec(RequestModel):
    """``TRTCompilationJobV1``; the CLI's spelling of the type (section 12.7)."""

    type: Literal["trt-compilation-v1"] = "trt-compilation-v1"
    model_id: str
    compilation_devices: list[Literal["nvidia-l4", "nvidia-t4", "nvidia-l40s"]] = Field(
        min_length=1
    )
    notifications_url: str | None = Field(default=None, alias="notificationsURL")

    def to_wire(self, workspace: str | None = None) -> dict[str, Any]:
        del workspace  # a compilation job names no workspace in its body
        return super().to_wire()


JobSpec = ImageJobSpec | VideoJobSpec | TrtCompilationJobSpec


def whole(value: float | None) -> int | float | None:
    """``value`` as an int when it is a whole number (30.0 -> 30): what the service is sent
    where the official client sends integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RestartOverrides(BaseModel):
    """Overrides for ``POST /jobs/{jobId}/restart``; empty overrides mean no body at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_type: MachineType | None = None
    workers_per_machine: int | None = Field(default=None, ge=1)
    max_parallel_tasks: int | None = Field(default=None, ge=1)
    max_runtime_seconds: float | None = Field(default=None, gt=0)
    max_image_failure_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)

    def to_wire(self) -> dict[str, Any] | None:
        if self.is_empty():
            return None
        body: dict[str, Any] = {"type": "parameters-override-v1"}
        if self.machine_type is not None or self.workers_per_machine is not None:
            body["computeConfiguration"] = ComputeConfiguration(
                machine_type=self.machine_type, workers_per_machine=self.workers_per_machine
            ).to_wire()
        if self.max_parallel_tasks is not None:
            body["maxParallelTasks"] = self.max_parallel_tasks
        if self.max_runtime_seconds is not None:
            # The service takes whole seconds (an int in the official client).
            body["processingTimeoutSeconds"] = whole(self.max_runtime_seconds)
        if self.max_image_failure_rate is not None:
            body["maxImageFailureRate"] = self.max_image_failure_rate
        return body


# --- RoboQL ingest (contract section 3.12) ---------------------------------------------------


class RoboqlIngest(RequestModel):
    """A batch built by the service from the workspace's Asset Library images that ``query``
    selects. Unlike the other ingests, ``displayName`` travels in the body here."""

    query: str
    display_name: str | None = None
    ingest_id: str | None = None
    notifications_url: str | None = Field(default=None, alias="notificationsURL")
