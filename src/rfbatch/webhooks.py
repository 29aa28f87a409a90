"""The webhook receiver: job and ingest notifications from the service (contract section 9).

A notification only says "look again": whoever waits on a job or an ingest is woken and asks
the API, so a forged, lost or reordered notification can cost a poll, never a wrong state.
Still, the receiver refuses what it should not take:

* ``Authorization`` is compared in constant time with the expected value (the service sends
  ``Bearer rf_<...>`` per GB-DOC, the bare publishable key per INT-DOC; both wordings of the
  expected value are accepted): 401 when missing or wrong. Its value is never logged.
* The body is capped, by ``Content-Length`` and by what is actually read: 413. A body that does
  not arrive within ``read_timeout`` is dropped: 408.
* A body that is not a JSON object with string ``event_id`` and ``type`` is 400.
* Every ``event_id`` is recorded (``record_event``, the manifest's in production) before it is
  acted on; a redelivery answers 200 and does nothing.

Mount it on any aiohttp application with :meth:`WebhookReceiver.add_to`, or serve it alone with
:func:`serve_webhooks`.
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import anyio
import structlog
from aiohttp import web

from rfbatch.obs.health import serve_http

log = structlog.get_logger("rfbatch.webhooks")

JOB_NOTIFICATION = "roboflow-batch-job-notification-v1"
STAGING_NOTIFICATION = "roboflow-data-staging-notification-v1"
INGEST_STATUS = "ingest-status-notification-v1"
FILES_STATUS = "ingest-files-status-notification-v1"

RejectReason = Literal[
    "missing_authorization", "bad_authorization", "too_large", "slow_body", "malformed"
]
RecordEvent = Callable[[str], Awaitable[bool]]

_CHUNK = 64 * 1024
_MAX_EVENT_ID = 200  # ids are UUIDs; anything far longer is not the service's
# Forgotten jobs and batches remembered, so that notices trailing the end are not kept again.
_FORGOTTEN_KEPT = 10_000
# Jobs and batches nobody waits on (yet) whose notices are kept, most recent first.
UNCLAIMED_KEPT = 1_000


# --- waking ----------------------------------------------------------------------------------


class _Signal:
    """A notification counter for one job or batch that waiters can block on."""

    def __init__(self) -> None:
        self.count = 0
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        self.count += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def changed(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class Waker:
    """Wakes its one waiter once for every notification it has not yet been woken for.

    Notifications that arrived before the waker was made count too, so a waiter never misses
    one that raced ahead of it. Give every waiter its own waker.
    """

    def __init__(self, signal: _Signal) -> None:
        self._signal = signal
        self._seen = 0

    def __repr__(self) -> str:
        return f"<Waker seen={self._seen} of {self._signal.count}>"

    @property
    def pending(self) -> bool:
        """A notification arrived that :meth:`wait` has not returned for yet."""
        return self._signal.count > self._seen

    async def wait(self) -> None:
        while not self.pending:
            await self._signal.changed()
        self._seen = self._signal.count

    async def wait_for(self, seconds: float) -> bool:
        """:meth:`wait`, but give up after ``seconds``; ``True`` when woken."""
        with anyio.move_on_after(seconds):
            await self.wait()
            return True
        return False


# --- what arrived ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobNotice:
    event_id: str
    job_id: str
    job_state: str | None
    delivery_attempt: int | None


@dataclass(frozen=True)
class FailedFile:
    file_name: str
    type: str
    reason: str


@dataclass(frozen=True)
class IngestReport:
    """What the ingest notifications of one batch said so far.

    ``success`` is ``None`` until an ``ingest-status`` notification arrives, then ``False`` if
    any said so. File lists come from ``files-status`` notifications (which the service may
    truncate: ``content_truncated``).
    """

    batch_id: str
    ingest_ids: tuple[str, ...]
    status_notices: int
    success: bool | None
    errors: tuple[str, ...]
    ingested_files: int
    failed_files: tuple[FailedFile, ...]
    content_truncated: bool


@dataclass
class _Ingest:
    signal: _Signal = field(default_factory=_Signal)
    ingest_ids: dict[str, None] = field(default_factory=dict)
    status_notices: int = 0
    success: bool | None = None
    errors: list[str] = field(default_factory=list)
    ingested_files: int = 0
    failed_files: list[FailedFile] = field(default_factory=list)
    content_truncated: bool = False

    def report(self, batch_id: str) -> IngestReport:
        return IngestReport(
            batch_id=batch_id,
            ingest_ids=tuple(self.ingest_ids),
            status_notices=self.status_notices,
            success=self.success,
            errors=tuple(self.errors),
            ingested_files=self.ingested_files,
            failed_files=tuple(self.failed_files),
            content_truncated=self.content_truncated,
        )


@dataclass(frozen=True)
class WebhookStatistics:
    received: int
    accepted: int
    duplicates: int
    ignored: int
    rejected: dict[str, int]
    jobs_kept: int
    """Jobs the receiver keeps something for: waited on, or noticed lately."""
    batches_kept: int


class _Malformed(ValueError):
    pass


def _unicode(key: str, value: str) -> str:
    # JSON may spell lone surrogates ("\ud800"): no id of the service's is made of them, and
    # they cannot be stored or logged as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed(f"{key} is not valid Unicode") from None
    return value


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if isinstance(value, str) and value:
        return _unicode(key, value)
    raise _Malformed(f"{key} must be a non-empty string")


def _optional_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return _unicode(key, value) if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _failed_files(raw: Any) -> list[FailedFile]:
    if not isinstance(raw, list):
        return []
    out = []
    for entry in raw:
        if isinstance(entry, dict):
            out.append(
                FailedFile(
                    file_name=str(entry.get("file_name", "")),
                    type=str(entry.get("type", "")),
                    reason=str(entry.get("reason", "")),
                )
            )
    return out


class _RecentIds:
    """The ids most recently added, at most ``capacity`` of them (the oldest go first)."""

    def __init__(self, capacity: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def discard(self, key: str) -> None:
        self._ids.pop(key, None)


E = TypeVar("E")


class _Kept(Generic[E]):
    """What the receiver keeps per job or batch id (``E``), bounded for a daemon's months.

    An id a waiter asked for is kept until it is forgotten. An id only notices made (a job
    started elsewhere with this receiver's URL, a batch nobody confirms, or one whose waiter
    has not come yet: a notice may race ahead of it) is kept among the ``capacity`` most
    recently noticed, the oldest going first. A forgotten id is remembered, so that notices
    trailing its end are taken but not kept.
    """

    def __init__(self, make: Callable[[], E], capacity: int) -> None:
        self._make = make
        self._capacity = capacity
        self._waited: dict[str, E] = {}
        self._unclaimed: OrderedDict[str, E] = OrderedDict()
        self._forgotten = _RecentIds(_FORGOTTEN_KEPT)

    def __len__(self) -> int:
        return len(self._waited) + len(self._unclaimed)

    def get(self, key: str) -> E | None:
        found = self._waited.get(key)
        return found if found is not None else self._unclaimed.get(key)

    def waited_on(self, key: str) -> E:
        """The entry of ``key``, kept from now until :meth:`forget`."""
        self._forgotten.discard(key)  # waited on again: its notices count again
        entry = self._waited.get(key)
        if entry is None:
            entry = self._unclaimed.pop(key, None)
            self._waited[key] = entry = entry if entry is not None else self._make()
        return entry

    def noticed(self, key: str) -> E | None:
        """The entry a notice for ``key`` updates; ``None`` for a forgotten id."""
        if key in self._forgotten:
            return None
        entry = self._waited.get(key)
        if entry is not None:
            return entry
        entry = self._unclaimed.pop(key, None)
        self._unclaimed[key] = entry = entry if entry is not None else self._make()
        if len(self._unclaimed) > self._capacity:
            self._unclaimed.popitem(last=False)
        return entry

    def forget(self, key: str) -> None:
        self._waited.pop(key, None)
        self._unclaimed.pop(key, None)
        self._forgotten.add(key)


class InMemoryEvents:
    """A ``record_event`` for short-lived receivers without a manifest: remembers the last
    ``capacity`` event ids."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen = _RecentIds(capacity)

    async def __call__(self, event_id: str) -> bool:
        new = event_id not in self._seen
        self._seen.add(event_id)
        return new


# --- the receiver ----------------------------------------------------------------------------


def _expected_forms(authorization: str) -> tuple[bytes, ...]:
    value = authorization.strip()
    if not value:
        raise ValueError("the expected Authorization value must not be empty")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        forms = (value, token.strip())
    else:
        forms = (value, f"Bearer {value}")
    return tuple(f.encode("utf-8", "surrogatepass") for f in forms)


class WebhookReceiver:
    """Receives job and ingest notifications and wakes whoever waits on them."""

    def __init__(
        self,
        authorization: str,
        max_body_bytes: int,
        record_event: RecordEvent,
        *,
        read_timeout: float = 30.0,
        unclaimed_kept: int = UNCLAIMED_KEPT,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        self._expected = _expected_forms(authorization)
        self._max_body = max_body_bytes
        self._record_event = record_event
        self._read_timeout = read_timeout
        self._jobs: _Kept[_Signal] = _Kept(_Signal, unclaimed_kept)
        self._ingests: _Kept[_Ingest] = _Kept(_Ingest, unclaimed_kept)
        self._received = self._accepted = self._duplicates = self._ignored = 0
        self._rejected: dict[str, int] = {}

    def __repr__(self) -> str:
        # The expected Authorization value is a credential: never shown.
        return f"<WebhookReceiver received={self._received}>"

    # -- mounting ----------------------------------------------------------------------------

    def routes(self, path: str = "/webhook") -> list[web.RouteDef]:
        return [web.post(path, self.handle)]

    def add_to(self, app: web.Application, path: str = "/webhook") -> None:
        app.add_routes(self.routes(path))

    # -- reading what arrived ----------------------------------------------------------------

    def statistics(self) -> WebhookStatistics:
        return WebhookStatistics(
            received=self._received,
            accepted=self._accepted,
            duplicates=self._duplicates,
            ignored=self._ignored,
            rejected=dict(self._rejected),
            jobs_kept=len(self._jobs),
            batches_kept=len(self._ingests),
        )

    def job_waker(self, job_id: str) -> Waker:
        """A waker for the job's notices (those that came before it count too); the job is
        kept until :meth:`forget_job`."""
        return Waker(self._jobs.waited_on(job_id))

    def ingest_waker(self, batch_id: str) -> Waker:
        """As :meth:`job_waker`, for the ingest notices of a batch."""
        return Waker(self._ingests.waited_on(batch_id).signal)

    def ingest_report(self, batch_id: str) -> IngestReport:
        return (self._ingests.get(batch_id) or _Ingest()).report(batch_id)

    def forget_job(self, job_id: str) -> None:
        """Drop what is kept for a job nobody will wait on again (a daemon runs for months).

        Notices for it that arrive later (the end may be seen by a poll before its notice
        comes) are taken and ignored, so nothing is kept for it again.
        """
        self._jobs.forget(job_id)

    def forget_batch(self, batch_id: str) -> None:
        """Drop what is kept for a batch whose ingest is confirmed; as :meth:`forget_job`,
        later notices for it (each shard sends two) are ignored."""
        self._ingests.forget(batch_id)

    # -- the handler -------------------------------------------------------------------------

    def _reject(self, request: web.Request, reason: RejectReason, status: int) -> web.Response:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        log.warning("webhook.rejected", reason=reason, status=status, peer=request.remote)
        return web.json_response({"error": reason}, status=status)

    def _authorized(self, header: str) -> bool:
        given = header.strip().encode("utf-8", "surrogatepass")
        # Every form is compared, so the time taken does not say which one came close.
        matches = [hmac.compare_digest(given, form) for form in self._expected]
        return any(matches)

    async def _read_capped(self, request: web.Request) -> bytes | None:
        """The body, or ``None`` once it runs past the cap (whatever Content-Length said)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: web.Request) -> web.Response:
        self._received += 1
        header = request.headers.get("Authorization")
        if not header:
            return self._reject(request, "missing_authorization", 401)
        if not self._authorized(header):
            return self._reject(request, "bad_authorization", 401)
        length = request.content_length
        if length is not None and length > self._max_body:
            return self._reject(request, "too_large", 413)
        raw: bytes | None = None
        with anyio.move_on_after(self._read_timeout):
            raw = await self._read_capped(request)
            if raw is None:
                return self._reject(request, "too_large", 413)
        if raw is None:
            return self._reject(request, "slow_body", 408)
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise _Malformed("the body is not a JSON object")
            event_id = _text(payload, "event_id")
            if len(event_id) > _MAX_EVENT_ID:
                raise _Malformed("event_id is too long")
            kind = _text(payload, "type")
            apply = self._parse(kind, payload)
        # ValueError covers json's errors, UnicodeDecodeError and _Malformed; deep nesting
        # within the size cap can still exhaust the parser's recursion.
        except (ValueError, RecursionError) as exc:
            log.warning("webhook.malformed", problem=str(exc)[:200], peer=request.remote)
            return self._reject(request, "malformed", 400)
        if not await self._record_event(event_id):
            self._duplicates += 1
            log.info("webhook.duplicate", event_id=event_id, type=kind)
            return web.json_response({"status": "duplicate"})
        self._accepted += 1
        if apply is None:
            self._ignored += 1
            log.info("webhook.ignored", event_id=event_id, type=kind)
        else:
            apply(event_id)
        return web.json_response({"status": "ok"})

    def _parse(self, kind: str, payload: dict[str, Any]) -> Callable[[str], None] | None:
        """Check the payload and return what applying it does (``None``: a type we do not use).

        Everything is checked before the event id is recorded, so a payload we refused can be
        delivered again (fixed) and is not mistaken for a duplicate.
        """
        if kind == JOB_NOTIFICATION:
            job_id = _text(payload, "job_id")
            state = payload.get("job_state")
            notice_state = state if isinstance(state, str) else None
            attempt = _int(payload.get("delivery_attempt"))
            return lambda event_id: self._on_job(JobNotice(event_id, job_id, notice_state, attempt))
        if kind == STAGING_NOTIFICATION:
            batch_id = _text(payload, "batch_id")
            notification = payload.get("notification")
            if not isinstance(notification, dict):
                raise _Malformed("notification must be an object")
            ingest_id = _optional_text(payload, "ingest_id")
            return lambda event_id: self._on_ingest(event_id, batch_id, ingest_id, notification)
        return None

    def _on_job(self, notice: JobNotice) -> None:
        signal = self._jobs.noticed(notice.job_id)
        if signal is None:
            log.info(
                "webhook.late",
                event_id=notice.event_id,
                job=notice.job_id,
                job_state=notice.job_state,
            )
            return
        log.info(
            "webhook.job",
            event_id=notice.event_id,
            job=notice.job_id,
            job_state=notice.job_state,
            attempt=notice.delivery_attempt,
        )
        signal.notify()

    def _on_ingest(
        self, event_id: str, batch_id: str, ingest_id: str | None, notification: dict[str, Any]
    ) -> None:
        state = self._ingests.noticed(batch_id)
        if state is None:
            log.info("webhook.late", event_id=event_id, batch=batch_id)
            return
        if ingest_id:
            state.ingest_ids.setdefault(ingest_id, None)
        kind = notification.get("type")
        success = notification.get("success")
        if kind == INGEST_STATUS:
            state.status_notices += 1
            ok = success is True
            state.success = ok if state.success is None else state.success and ok
            details = notification.get("error_details")
            if isinstance(details, dict):
                state.errors.append(f"{details.get('type', 'error')}: {details.get('reason', '')}")
        elif kind == FILES_STATUS:
            ingested = notification.get("ingested_files")
            state.ingested_files += len(ingested) if isinstance(ingested, list) else 0
            state.failed_files.extend(_failed_files(notification.get("failed_files")))
            state.content_truncated |= notification.get("content_truncated") is True
        log.info(
            "webhook.ingest",
            event_id=event_id,
            batch=batch_id,
            ingest=ingest_id,
            kind=kind,
            success=success,
        )
        state.signal.notify()


@asynccontextmanager
async def serve_webhooks(
    receiver: WebhookReceiver,
    host: str,
    port: int,
    *,
    path: str = "/webhook",
    setting: str = "[webhook] listen",
) -> AsyncIterator[str]:
    """Serve ``receiver`` alone on ``host:port`` (0 picks a free port); yields its URL.

    An address that cannot be bound (in use, not local) is a :class:`ConfigError` naming the
    ``setting`` (or flag) that chose it.
    """
    app = web.Application()
    receiver.add_to(app, path)
    async with serve_http(app, host, port, setting=setting) as base:
        url = f"{base}{path}"
        log.info("webhook.listening", url=url)
        yield url
