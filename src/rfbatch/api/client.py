"""The typed async client of the Roboflow Batch Processing and Data Staging API.

One method per endpoint of the contract (sections 2 to 5). Every call validates its ids first,
waits for a slot under the concurrency cap, sends the API key only as the ``api_key`` query
parameter, maps statuses to :mod:`rfbatch.errors`, retries what is worth retrying, and parses the
body into a :mod:`rfbatch.api.schemas` model. Paginated listings come back as
:class:`~rfbatch.api.pagination.Paginator` objects: iterate them for items, or call ``pages()``.

Usage::

    async with RoboflowClient(ClientConfig.from_env()) as client:
        async for batch in client.list_batches():
            ...
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import aiohttp
import anyio
import structlog
from pydantic import BaseModel, ValidationError
from yarl import URL

from rfbatch.api.config import ClientConfig
from rfbatch.api.http_errors import error_for_status
from rfbatch.api.idempotency import with_ingest_id
from rfbatch.api.pagination import Page, Paginator
from rfbatch.api.schemas import (
    BatchesPage,
    BatchMetadata,
    BatchResponse,
    CountResponse,
    FileMetadata,
    FilesPage,
    ImageReference,
    ImageReferencesIngest,
    IngestResult,
    JobMetadata,
    JobResponse,
    JobsPage,
    JobSpec,
    JobStage,
    LogEntry,
    LogsPage,
    NotificationCategory,
    PartMetadata,
    PartsResponse,
    RestartOverrides,
    RoboqlIngest,
    ShardDetails,
    ShardsPage,
    SignedUrl,
    SignedUrlResponse,
    StagesResponse,
    TasksPage,
    TaskStatus,
    TrtCompilationJobSpec,
    VideoReference,
    VideoReferencesIngest,
    WorkspaceInfo,
)
from rfbatch.errors import (
    ApiUnreachableError,
    ConfigError,
    DecodeError,
    FatalApiError,
    TransientError,
)
from rfbatch.http.bodies import ERROR_BODY_BYTES, read_capped, read_head
from rfbatch.http.failures import classify_transient, raise_transport
from rfbatch.http.retry import Retrier, RetryHook
from rfbatch.http.session import SessionHolder, client_timeout, open_session
from rfbatch.http.statuses import parse_retry_after, server_message
from rfbatch.ids import validate_batch_id, validate_job_id
from rfbatch.redact import redact_url

M = TypeVar("M", bound=BaseModel)
ItemT = TypeVar("ItemT")
BodyMode = Literal["json", "optional", "ignore"]
Params = Mapping[str, str | int | float | None]

_DATA_STAGING = "data-staging/v1/external"
_BATCH_PROCESSING = "batch-processing/v1/external"
_SEVERITIES = ("info", "warning", "error")


class IngestOptions(TypedDict, total=False):
    """The keyword options of the two reference-ingest calls."""

    references_url: str | None  # a JSONL file of references, instead of a list
    ingest_id: str | None
    notifications_url: str | None
    notification_categories: Sequence[NotificationCategory] | None
    display_name: str | None


def _check_page_size(page_size: int | None) -> None:
    if page_size is not None and page_size < 1:
        raise ConfigError(f"page size must be >= 1, got {page_size}")


def _check_file_name(file_name: str) -> None:
    # The service keys items by base name; a path would be a caller bug, not a request to send.
    if not file_name or "/" in file_name or "\\" in file_name or file_name in (".", ".."):
        raise ConfigError(f"invalid file name {file_name!r}: give a base name, not a path")


class RoboflowClient(SessionHolder):
    """Async client for one workspace; use it as an async context manager."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        retrier = Retrier(
            config.retry,
            log_event="api.retry",
            hooks=[on_retry] if on_retry else [],
            secrets=[config.api_key],
        )
        super().__init__(session, retrier)
        self.config = config
        self._timeout = client_timeout(config.connect_timeout, config.read_timeout)
        self._headers = {"User-Agent": config.user_agent}
        self._slots = anyio.Semaphore(config.max_concurrent_requests)
        # An API call that ends in HTTP 500 is not sent again, as the official client does not
        # (it retries 408, 429, 502, 503 and 504): a 500 says the request upset the service,
        # and a POST sent again might act twice. Storage transfers keep their own cap.
        no_500 = replace(config.retry, server_error_attempts=1)
        self._classify = partial(classify_transient, policy=no_500)
        self._workspace: str | None = None
        self._workspace_lock = anyio.Lock()
        self._log: Any = structlog.get_logger("rfbatch.api")
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"<RoboflowClient {self.config.base_url}>"

    async def _open_session(self) -> aiohttp.ClientSession:
        return await open_session(
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            max_connections=self.config.max_concurrent_requests,
            ca_bundle=self.config.ca_bundle,
        )

    # --- observability -----------------------------------------------------------------------

    @property
    def retry_counts(self) -> dict[str, int]:
        """Retries so far, by reason ("429", "503", "timeout", "connection", ...)."""
        return dict(self._retrier.counts)

    # --- plumbing ----------------------------------------------------------------------------

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        body: BodyMode = "json",
        read_timeout: float | None = None,
    ) -> Any:
        session = self._require_session()
        query: dict[str, str | int | float] = {"api_key": self.config.api_key}
        query.update({k: v for k, v in (params or {}).items() if v is not None})
        shown_url = redact_url(str(URL(url).update_query(query)))
        timeout = self._timeout
        if read_timeout is not None:
            timeout = client_timeout(self.config.connect_timeout, read_timeout)
        # A call without a body sends none at all: no invented Content-Type either.
        skip = () if (json_body is not None or form is not None) else ("Content-Type",)
        limit = self.config.max_response_bytes

        async def attempt() -> Any:
            started = time.monotonic()
            async with self._slots:
                self.requests_sent += 1
                try:
                    async with session.request(
                        method,
                        url,
                        params=query,
                        json=json_body,
                        data=form() if form is not None else None,
                        headers=self._headers,
                        skip_auto_headers=skip,
                        timeout=timeout,
                    ) as resp:
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
                        if 200 <= status < 300:
                            body_or_none = await read_capped(resp, limit)
                        else:
                            body_or_none = await read_head(resp, ERROR_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise_transport(
                        endpoint,
                        shown_url,
                        exc,
                        certificate=FatalApiError,
                        secrets=(self.config.api_key,),
                    )
            if body_or_none is None:
                raise DecodeError(
                    f"{endpoint}: response body is larger than {limit} bytes; refusing to read it",
                    status=status,
                    url=shown_url,
                )
            raw = body_or_none
            self._log.debug(
                "api.call",
                endpoint=endpoint,
                method=method,
                status=status,
                elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            )
            if 200 <= status < 300:
                return self._parse_json(endpoint, raw, body, shown_url)
            if status < 400:
                # Redirects are followed by aiohttp; anything else here is off-contract.
                raise DecodeError(f"{endpoint}: unexpected status", status=status, url=shown_url)
            message = f"{endpoint}: {server_message(raw, self.config.api_key)}"
            raise error_for_status(
                status, message, url=shown_url, retry_after=parse_retry_after(retry_after)
            )

        try:
            return await self._retrier.call(endpoint, attempt, self._classify)
        except TransientError as exc:
            if exc.status is not None:
                raise  # the service answered: its trouble may be this request's alone
            # exc's text already names the endpoint and the (redacted) URL.
            raise ApiUnreachableError(
                f"the API at {self.config.base_url} cannot be reached: {exc}"
            ) from exc

    def _parse_json(self, endpoint: str, raw: bytes, mode: BodyMode, url: str) -> Any:
        if mode == "ignore":
            return None
        try:
            return json.loads(raw)
        # ValueError covers bad JSON and bad UTF-8; a body nested deeper than the parser's
        # recursion limit is no JSON the contract describes either.
        except (ValueError, RecursionError):
            if mode == "optional":
                return None
            raise DecodeError(
                f"{endpoint}: response is not JSON ({server_message(raw, self.config.api_key)})",
                url=url,
            ) from None

    def _decode(self, endpoint: str, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # Field locations and messages only: input values may hold signed URLs.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                for err in exc.errors(
                    include_url=False, include_input=False, include_context=False
                )[:5]
            )
            raise DecodeError(f"{endpoint}: unexpected response shape ({problems})") from None

    async def _staging_url(self, *parts: str) -> str:
        workspace = quote(await self.workspace(), safe="")
        return "/".join((self.config.base_url, _DATA_STAGING, workspace, *parts))

    async def _jobs_url(self, *parts: str) -> str:
        workspace = quote(await self.workspace(), safe="")
        return "/".join((self.config.base_url, _BATCH_PROCESSING, workspace, *parts))

    def _paginate(
        self,
        endpoint: str,
        url_parts: Callable[[], Awaitable[str]],
        model: type[M],
        items: Callable[[M], list[ItemT]],
        params: Params,
    ) -> Paginator[ItemT]:
        async def fetch(token: str | None) -> Page[ItemT]:
            url = await url_parts()
            data = await self._send(endpoint, "GET", url, params={**params, "nextPageToken": token})
            page = self._decode(endpoint, model, data)
            return Page(items(page), getattr(page, "next_page_token", None))

        return Paginator(endpoint, fetch)

    # --- workspace (section 2) ---------------------------------------------------------------

    async def workspace(self) -> str:
        """The workspace slug of the API key; looked up once, then cached."""
        if self._workspace is not None:
            return self._workspace
        async with self._workspace_lock:
            if self._workspace is None:
                data = await self._send("workspace", "GET", self.config.base_url)
                slug = self._decode("workspace", WorkspaceInfo, data).workspace
                if not slug:
                    raise DecodeError("workspace: the service returned an empty workspace")
                self._workspace = slug
            return self._workspace

    # --- data staging (section 3) ------------------------------------------------------------

    def list_batches(self, page_size: int | None = None) -> Paginator[BatchMetadata]:
        _check_page_size(page_size)

        async def url() -> str:
            return await self._staging_url("batches")

        return self._paginate(
            "list_batches", url, BatchesPage, lambda p: p.batches, {"pageSize": page_size}
        )

    async def get_batch(self, batch_id: str) -> BatchMetadata:
        validate_batch_id(batch_id)
        url = await self._staging_url("batches", batch_id)
        data = await self._send("get_batch", "GET", url)
        return self._decode("get_batch", BatchResponse, data).batch

    async def count(self, batch_id: str, part_name: str | None = None) -> int:
        validate_batch_id(batch_id)
        url = await self._staging_url("batches", batch_id, "count")
        data = await self._send("count", "GET", url, params={"partName": part_name})
        return self._decode("count", CountResponse, data).count

    async def list_parts(self, batch_id: str) -> list[PartMetadata]:
        validate_batch_id(batch_id)
        url = await self._staging_url("batches", batch_id, "parts")
        data = await self._send("list_parts", "GET", url)
        return self._decode("list_parts", PartsResponse, data).batch_parts

    def list_files(
        self, batch_id: str, part_name: str | None = None, page_size: int | None = None
    ) -> Paginator[FileMetadata]:
        validate_batch_id(batch_id)
        _check_page_size(page_size)

        async def url() -> str:
            return await self._staging_url("batches", batch_id, "list")

        return self._paginate(
            "list_files",
            url,
            FilesPage,
            lambda p: p.files_metadata,
            {"pageSize": page_size, "partName": part_name},
        )

    def list_file_pages(
        self, batch_id: str, part_name: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Page[FileMetadata]]:
        """Whole pages of :meth:`list_files`, for a consumer that prefetches pages."""
        return self.list_files(batch_id, part_name, page_size).pages()

    def list_shards(self, batch_id: str, page_size: int | None = None) -> Paginator[ShardDetails]:
        validate_batch_id(batch_id)
        _check_page_size(page_size)

        async def url() -> str:
            return await self._staging_url("batches", batch_id, "shards")

        return self._paginate(
            "list_shards", url, ShardsPage, lambda p: p.shards, {"pageSize": page_size}
        )

    async def upload_image(
        self,
        batch_id: str,
        file_name: str,
        data: bytes,
        display_name: str | None = None,
    ) -> None:
        """Single-image upload into a simple batch: one multipart part named after the file."""
        validate_batch_id(batch_id)
        _check_file_name(file_name)

        def form() -> aiohttp.FormData:
            # Built per attempt: aiohttp consumes a FormData when it sends it.
            fd = aiohttp.FormData()
            fd.add_field(file_name, data, filename=file_name)
            return fd

        url = await self._staging_url("batches", batch_id, "upload", "image")
        await self._send(
            "upload_image",
            "POST",
            url,
            params={"fileName": file_name, "displayName": display_name or batch_id},
            form=form,
            body="ignore",
        )

    async def video_upload_url(
        self, batch_id: str, file_name: str, display_name: str | None = None
    ) -> SignedUrl:
        validate_batch_id(batch_id)
        _check_file_name(file_name)
        url = await self._staging_url("batches", batch_id, "upload", "video")
        data = await self._send(
            "video_url",
            "POST",
            url,
            params={"fileName": file_name, "displayName": display_name or batch_id},
        )
        return self._decode("video_url", SignedUrlResponse, data).signed_url_details

    async def shard_upload_url(self, batch_id: str, display_name: str | None = None) -> SignedUrl:
        validate_batch_id(batch_id)
        url = await self._staging_url("batches", batch_id, "bulk-upload", "image-files")
        # The batch's name, else its id, as the official client sends it on every such call.
        params = {"displayName": display_name or batch_id}
        data = await self._send("shard_url", "POST", url, params=params)
        return self._decode("shard_url", SignedUrlResponse, data).signed_url_details

    async def ingest_image_references(
        self,
        batch_id: str,
        references: Sequence[ImageReference] | None = None,
        **options: Unpack[IngestOptions],
    ) -> IngestResult:
        """Ask the service to fetch images itself, from a list or from a JSONL file's URL."""
        return await self._ingest_references("image", batch_id, references, options)

    async def ingest_video_references(
        self,
        batch_id: str,
        references: Sequence[VideoReference] | None = None,
        **options: Unpack[IngestOptions],
    ) -> IngestResult:
        """Ask the service to fetch videos itself, from a list or from a JSONL file's URL."""
        return await self._ingest_references("video", batch_id, references, options)

    async def _ingest_references(
        self,
        kind: Literal["image", "video"],
        batch_id: str,
        references: Sequence[ImageReference] | None,
        options: IngestOptions,
    ) -> IngestResult:
        validate_batch_id(batch_id)
        references_url = options.get("references_url")
        if (references is None) == (references_url is None):
            raise ConfigError("give exactly one of references and references_url")
        categories = options.get("notification_categories")
        model = ImageReferencesIngest if kind == "image" else VideoReferencesIngest
        # The two wire models differ only in the prefix of their two reference fields.
        request = model(
            **{
                f"{kind}_references": list(references) if references is not None else None,
                f"{kind}_references_url": references_url,
            },
            ingest_id=options.get("ingest_id"),
            notifications_url=options.get("notifications_url"),
            notification_categories=list(categories) if categories else None,
        )
        endpoint = f"ingest_{kind}s"
        body = with_ingest_id(request.to_wire(), batch_id, endpoint)
        url = await self._staging_url("batches", batch_id, "bulk-upload", f"{kind}-references")
        data = await self._send(
            endpoint,
            "POST",
            url,
            params={"displayName": options.get("display_name") or batch_id},
            json_body=body,
            # The service fetches a reference list before it answers: the CLI allows twice as long.
            read_timeout=2 * self.config.read_timeout,
        )
        return self._decode(endpoint, IngestResult, data)

    # --- batch processing (section 5) --------------------------------------------------------

    def list_jobs(self, page_size: int | None = None) -> Paginator[JobMetadata]:
        _check_page_size(page_size)

        async def url() -> str:
            return await self._jobs_url("jobs")

        return self._paginate("list_jobs", url, JobsPage, lambda p: p.jobs, {"pageSize": page_size})

    async def get_job(self, job_id: str) -> JobMetadata:
        validate_job_id(job_id)
        url = await self._jobs_url("jobs", job_id)
        data = await self._send("job_status", "GET", url)
        return self._decode("job_status", JobResponse, data).job

    async def start_job(self, job_id: str, spec: JobSpec, name: str | None = None) -> None:
        """Create a job; the same id with the same spec again is a no-op on the service."""
        validate_job_id(job_id)
        if not isinstance(spec, TrtCompilationJobSpec):
            validate_batch_id(spec.batch_id)
        url = await self._jobs_url("jobs", job_id)
        body = spec.to_wire(await self.workspace())
        await self._send(
            "jobs_start", "POST", url, params={"name": name}, json_body=body, body="ignore"
        )

    async def list_stages(self, job_id: str) -> list[JobStage]:
        validate_job_id(job_id)
        url = await self._jobs_url("jobs", job_id, "stages")
        data = await self._send("job_stages", "GET", url)
        return self._decode("job_stages", StagesResponse, data).stages

    def list_tasks(
        self, job_id: str, stage_id: str, page_size: int | None = None
    ) -> Paginator[TaskStatus]:
        validate_job_id(job_id)
        _check_page_size(page_size)
        if not stage_id:
            raise ConfigError("stage id must not be empty")

        async def url() -> str:
            return await self._jobs_url("jobs", job_id, "stages", quote(stage_id, safe=""), "tasks")

        return self._paginate(
            "job_tasks", url, TasksPage, lambda p: p.tasks, {"pageSize": page_size}
        )

    async def abort_job(self, job_id: str) -> dict[str, Any]:
        validate_job_id(job_id)
        url = await self._jobs_url("jobs", job_id, "abort")
        data = await self._send("job_abort", "POST", url, body="optional")
        return data if isinstance(data, dict) else {}

    async def restart_job(
        self, job_id: str, overrides: RestartOverrides | None = None
    ) -> dict[str, Any]:
        """Restart an aborted or failed job; without overrides no body is sent at all."""
        validate_job_id(job_id)
        body = overrides.to_wire() if overrides is not None else None
        url = await self._jobs_url("jobs", job_id, "restart")
        data = await self._send("job_restart", "POST", url, json_body=body, body="optional")
        return data if isinstance(data, dict) else {}

    def job_logs(
        self, job_id: str, severity: str | None = None, page_size: int | None = None
    ) -> Paginator[LogEntry]:
        validate_job_id(job_id)
        _check_page_size(page_size)
        if severity is not None and severity not in _SEVERITIES:
            raise ConfigError(f"severity must be one of {', '.join(_SEVERITIES)}, got {severity!r}")

        async def url() -> str:
            return await self._jobs_url("jobs", job_id, "logs")

        return self._paginate(
            "job_logs",
            url,
            LogsPage,
            lambda p: p.logs,
            {"pageSize": page_size, "severity": severity},
        )

    # --- RoboQL ingest (contract section 3.12) --------------------------------------------------

    async def ingest_roboql(
        self,
        batch_id: str,
        query: str,
        *,
        ingest_id: str | None = None,
        notifications_url: str | None = None,
        display_name: str | None = None,
    ) -> str:
        """Ask the service to build ``batch_id`` from the Asset Library images ``query`` selects;
        returns the ingest id sent (``ingest_id``, else one derived from the query).

        The service answers before it has looked at a single image, and its body says nothing
        the reference client reads: progress is the batch's count and listing."""
        validate_batch_id(batch_id)
        if not query.strip():
            raise ConfigError("a RoboQL query must not be empty")
        request = RoboqlIngest(
            query=query,
            display_name=display_name,
            ingest_id=ingest_id,
            notifications_url=notifications_url,
        )
        url = await self._staging_url("batches", batch_id, "roboql-ingest")
        body = with_ingest_id(request.to_wire(), batch_id, "ingest_roboql")
        await self._send("ingest_roboql", "POST", url, json_body=body, body="ignore")
        return str(body["ingestId"])
