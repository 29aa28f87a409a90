"""Ingests the service runs itself: references (URLs it fetches) and RoboQL queries.

Nothing is uploaded from here: the service fetches each reference (or selects Asset Library
images) in the background, so a 200 only means "accepted". Confirmation therefore polls the
batch (contract §3.10-3.12, issue 11): the count reaching the number of distinct names sent; and,
because a rejected reference leaves the count short for good and the status rows of shards are
undocumented, the batch "going quiet" (count, listing size and shard rows unchanged for
``quiet_seconds``) ends the wait early, naming every sent file missing from the listing.

``pipeline/confirm.confirm_ingest`` is not used: it counts files of the local ledger, and a
references ingest has none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog

from rfbatch.api import RoboflowClient
from rfbatch.api.client import IngestOptions
from rfbatch.api.schemas import ImageReference, NotificationCategory
from rfbatch.errors import ConfigError, NotFoundError
from rfbatch.pipeline.cloud_storage import cloud_references, is_cloud_path
from rfbatch.pipeline.confirm import pause

if TYPE_CHECKING:  # the receiver brings aiohttp's server, which only a webhook run needs
    from rfbatch.webhooks import WebhookReceiver

log = structlog.get_logger("rfbatch.references")

Kind = Literal["image", "video"]
# The reference client's chunk (MAX_IMAGE_REFERENCES_IN_INGEST_REQUEST); videos go in one request.
IMAGE_REFERENCES_PER_REQUEST = 20_000
_JSONL_HELP = 'each line {"name": "<file name>", "url": "https://<signed URL>"}'


@dataclass(frozen=True)
class ReferencesSource:
    """Either references read from a local JSONL file, or an https URL of such a file."""

    references: tuple[ImageReference, ...] | None = None
    url: str | None = None


def parse_source(source: str, extensions: Collection[str] = ()) -> ReferencesSource:
    """Read ``source``: a local JSONL file, an ``https://`` URL the service fetches, or a
    cloud-storage path whose objects with one of ``extensions`` are presigned (blocking: it
    lists the store; see :mod:`rfbatch.pipeline.cloud_storage`)."""
    if source.startswith("http://"):
        raise ConfigError(
            f"refusing {source!r}: only https:// references URLs are allowed "
            "(the service fetches the file itself)"
        )
    if source.startswith("https://"):
        return ReferencesSource(url=source)
    if is_cloud_path(source):
        return ReferencesSource(references=tuple(cloud_references(source, extensions)))
    return ReferencesSource(references=tuple(read_jsonl(Path(source))))


def read_jsonl(path: Path) -> list[ImageReference]:
    """The references of a JSONL file; a bad line is named by file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read references file {path}: {exc}") from exc
    refs: list[ImageReference] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{number}: not JSON; {_JSONL_HELP}") from None
        name = entry.get("name") if isinstance(entry, dict) else None
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(url, str) or not url:
            raise ConfigError(f"{path}:{number}: needs a string name and url; {_JSONL_HELP}")
        if name in seen:
            raise ConfigError(f"{path}:{number}: name {name!r} appears twice")
        seen.add(name)
        refs.append(ImageReference(name=name, url=url))
    if not refs:
        raise ConfigError(f"references file {path} holds no references; {_JSONL_HELP}")
    return refs


def chunks(
    refs: Sequence[ImageReference], kind: Kind
) -> list[tuple[int, tuple[ImageReference, ...]]]:
    size = IMAGE_REFERENCES_PER_REQUEST if kind == "image" else max(1, len(refs))
    return [(i // size, tuple(refs[i : i + size])) for i in range(0, len(refs), size)]


@dataclass(frozen=True)
class IngestRequest:
    batch_id: str
    kind: Kind
    ingest_id: str | None = None
    notifications_url: str | None = None
    categories: tuple[NotificationCategory, ...] = ()
    display_name: str | None = None


async def send_references(
    client: RoboflowClient, request: IngestRequest, source: ReferencesSource
) -> list[str]:
    """Send the references (in chunks for images); returns the ingest ids the service gave."""
    call = (
        client.ingest_image_references
        if request.kind == "image"
        else client.ingest_video_references
    )
    display = request.display_name or request.batch_id

    # Without an ingest id of the operator's, the client derives one from each request's input:
    # a request sent again (a lost answer, a rerun) is then a duplicate, not a second ingest.
    def options(ingest_id: str | None, references_url: str | None = None) -> IngestOptions:
        return {
            "references_url": references_url,
            "ingest_id": ingest_id,
            "notifications_url": request.notifications_url,
            "notification_categories": list(request.categories) or None,
            "display_name": display,
        }

    if source.url is not None:
        result = await call(request.batch_id, None, **options(request.ingest_id, source.url))
        return [result.ingest_id]
    assert source.references is not None
    parts = chunks(source.references, request.kind)
    ids: list[str] = []
    for index, part in parts:
        # The operator's id gets one suffix per chunk (the reference client stacks them:
        # id-0, id-0-1, ...).
        ingest_id = request.ingest_id
        if ingest_id is not None and len(parts) > 1:
            ingest_id = f"{ingest_id}-{index}"
        result = await call(request.batch_id, list(part), **options(ingest_id))
        ids.append(result.ingest_id)
    return ids


@dataclass
class IngestWait:
    batch_id: str
    expected: int | None  # None when the service alone knows (a references URL, a query)
    count: int = 0
    confirmed: bool = False
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # the service's word, when it gave one


async def _snapshot(client: RoboflowClient, batch_id: str) -> tuple[int, tuple[object, ...]]:
    """The count, and everything whose change means the service is still working."""
    try:
        count = await client.count(batch_id)
        shards = [
            (s.shard_id, s.status_name, s.status_type, s.shard_objects_count)
            async for s in client.list_shards(batch_id)
        ]
    except NotFoundError:  # a new batch may not exist until its first shard is processed
        return 0, ()
    return count, tuple(shards)


def _reported_failures(
    receiver: WebhookReceiver | None, batch_id: str, names: Sequence[str] | None
) -> dict[str, str]:
    """The sent names the ``files-status`` notifications say failed, with the reason given."""
    if receiver is None or names is None:
        return {}
    report = receiver.ingest_report(batch_id)
    if report.content_truncated:  # a cut list names some failures, not all: read the listing
        return {}
    sent = set(names)
    return {f.file_name: f.reason or f.type for f in report.failed_files if f.file_name in sent}


async def wait_for_ingest(
    client: RoboflowClient,
    batch_id: str,
    names: Sequence[str] | None,
    *,
    deadline_seconds: float,
    poll_interval: float,
    quiet_seconds: float,
    receiver: WebhookReceiver | None = None,
) -> IngestWait:
    """Poll until the batch holds every name sent, or it has gone quiet, or the deadline.

    With a ``receiver`` (the ingest was sent with its URL and the ``files-status`` category),
    each notification cuts a pause short, and once the count plus the files the notifications
    name as failed covers every name sent, the wait ends there, with the service's reasons.
    """
    started = time.monotonic()
    wait = IngestWait(batch_id, len(names) if names is not None else None)
    waker = receiver.ingest_waker(batch_id) if receiver is not None else None
    last: tuple[int, tuple[object, ...]] | None = None
    changed_at = started
    while True:
        now = time.monotonic()
        snap = await _snapshot(client, batch_id)
        wait.count = snap[0]
        if snap != last:
            last, changed_at = snap, now
        if wait.expected is not None and wait.count >= wait.expected:
            wait.confirmed = True
            break
        reasons = _reported_failures(receiver, batch_id, names)
        settled = wait.expected is not None and wait.count + len(reasons) >= wait.expected
        # Quiet: the service has stopped working on the batch. What it kept is in the listing.
        if settled or (snap[1] and now - changed_at >= quiet_seconds):
            if names is not None:
                present = {f.file_name async for f in client.list_files(batch_id)}
                wait.missing = [n for n in names if n not in present]
                wait.reasons = {n: reasons[n] for n in wait.missing if n in reasons}
            wait.confirmed = wait.expected is None and wait.count > 0
            break
        left = deadline_seconds - (now - started)
        if left <= 0:
            break
        await pause(waker, min(poll_interval, left))
    wait.seconds = round(time.monotonic() - started, 3)
    event = log.info if wait.confirmed else log.warning
    event(
        "ingest.wait",
        batch=batch_id,
        expected=wait.expected,
        count=wait.count,
        missing=len(wait.missing),
        seconds=wait.seconds,
    )
    return wait
