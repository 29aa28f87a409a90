"""What the emulator remembers: batches, their items, shards and parts.

Everything here is mutated only on the event loop, so no locks are needed. Item bytes live in
blob files under the state directory (``store="files"``) or not at all (``store="digests"``);
the records themselves stay in memory.
"""

from __future__ import annotations

import mimetypes
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

BatchType = Literal["simple-batch", "sharded-batch", "multipart-batch"]
ContentType = Literal["images", "videos", "metadata", "archives", "mixed"]
UploadMode = Literal["single", "bulk", "system"]

BATCH_RETENTION = timedelta(days=7)

IMAGE_EXTENSIONS = frozenset({"bmp", "dib", "jpeg", "jpg", "jpe", "jp2", "png", "webp"})

_EXTRA_TYPES = {
    "jsonl": "application/jsonl",
    "webp": "image/webp",
    "jp2": "image/jp2",
    "dib": "image/bmp",
    "jpe": "image/jpeg",
    "gz": "application/gzip",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, as the contract wants."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_optional(body: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``body`` plus each of ``optional`` that is set: the contract leaves absent fields out."""
    body.update((key, value) for key, value in optional.items() if value is not None)
    return body


def content_type_for(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if name.lower().endswith(".tar.gz"):
        return "application/gzip"
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def is_image_name(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


# Leading bytes of every image format the extension list admits: JPEG, PNG, BMP/DIB, WebP
# (RIFF....WEBP) and JPEG 2000 (the JP2 box or a bare codestream).
IMAGE_HEAD_BYTES = 12
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"BM",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xffO\xffQ",
)


def looks_like_image(head: bytes) -> bool:
    """Whether the first :data:`IMAGE_HEAD_BYTES` of a file are those of a known image format.

    The service decodes what it ingests; a text file named ``x.jpg`` fails there, whatever its
    name says.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head.startswith(_IMAGE_MAGIC)


@dataclass(slots=True)
class Item:
    """One file of a batch, keyed by (part, name); a repeat upload replaces it in place."""

    item_id: str
    name: str
    part_name: str | None
    size: int
    sha256: str
    received: int
    blob: Path | None
    shard_id: str | None
    content_type: str
    nested_content_type: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "received": self.received,
            "partName": self.part_name,
        }


@dataclass(slots=True)
class FailedItem:
    name: str
    reason: str
    shard_id: str | None = None


@dataclass(frozen=True)
class ShardVocabulary:
    """The (statusName, statusType) pairs shard rows carry.

    The real service documents neither, so each emulator seed draws its own words: a client
    that keys on a name fails against some seed. Only a failed shard's type contains "error",
    the one thing the contract states (section 6).
    """

    received: tuple[str, str]
    ingested: tuple[str, str]
    partial: tuple[str, str]
    failed: tuple[str, str]

    @classmethod
    def drawn(cls, seed: int | None) -> ShardVocabulary:
        rng = random.Random(seed)
        stem = rng.choice(["shard", "part", "chunk", "segment", "tar"])
        ok = rng.choice(["success", "ok", "complete", "done", "info"])
        words = rng.sample(["received", "processed", "indexed", "finished", "settled", "ready"], 3)
        tag = rng.randrange(16**4)
        return cls(
            received=(f"{stem}-{words[0]}-{tag:04x}", rng.choice(["info", "pending", "progress"])),
            ingested=(f"{stem}-{words[1]}-{tag:04x}", ok),
            partial=(f"{stem}-{words[2]}-{tag:04x}", rng.choice([ok, "warning", "notice"])),
            failed=(f"{stem}-{rng.choice(['failed', 'rejected', 'aborted'])}-{tag:04x}", "error"),
        )


@dataclass(slots=True)
class Shard:
    shard_id: str
    status_name: str
    status_type: str
    event_timestamp: datetime
    objects: int = 0
    metadata: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "shardId": self.shard_id,
            "statusName": self.status_name,
            "statusType": self.status_type,
            "eventTimestamp": iso(self.event_timestamp),
            "shardObjectsCount": self.objects,
        }
        return with_optional(body, statusMetadata=self.metadata)


@dataclass
class Part:
    name: str
    part_type: str
    content_type: str
    description: str | None = None
    nested_content_type: str | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "partName": self.name,
            "partType": self.part_type,
            "contentType": self.content_type,
        }
        return with_optional(
            body, partDescription=self.description, nestedContentType=self.nested_content_type
        )


@dataclass
class Batch:
    batch_id: str
    display_name: str
    batch_type: BatchType
    content_type: ContentType
    upload_mode: UploadMode
    created: datetime = field(default_factory=utcnow)
    # Append-only lists, so an index into them is a stable pagination cursor.
    items: list[Item] = field(default_factory=list)
    items_by_part: dict[str | None, list[Item]] = field(default_factory=dict)
    _by_key: dict[tuple[str | None, str], Item] = field(default_factory=dict)
    by_id: dict[str, Item] = field(default_factory=dict)
    shards: list[Shard] = field(default_factory=list)
    shards_by_id: dict[str, Shard] = field(default_factory=dict)
    parts: dict[str, Part] = field(default_factory=dict)
    failed: list[FailedItem] = field(default_factory=list)
    vocabulary: ShardVocabulary = field(default_factory=lambda: ShardVocabulary.drawn(None))
    processed: bool = False

    def wire(self) -> dict[str, Any]:
        return {
            "displayName": self.display_name,
            "batchId": self.batch_id,
            "batchType": self.batch_type,
            "batchContentType": self.content_type,
            "createdDate": iso(self.created),
            "expiryDate": iso(self.created + BATCH_RETENTION),
        }

    def count(self, part_name: str | None = None) -> int:
        if part_name is None:
            return len(self.items)
        return len(self.items_by_part.get(part_name, ()))

    def listing(self, part_name: str | None) -> list[Item]:
        if part_name is None:
            return self.items
        return self.items_by_part.get(part_name, [])

    def put_item(
        self,
        *,
        name: str,
        size: int,
        sha256: str,
        blob: Path | None,
        shard_id: str | None = None,
        part_name: str | None = None,
        nested_content_type: str | None = None,
    ) -> tuple[Item, Path | None]:
        """Add an item, or replace the one of the same name; returns it and the old blob."""
        key = (part_name, name)
        existing = self._by_key.get(key)
        if existing is not None:
            old_blob = existing.blob if existing.blob != blob else None
            existing.size = size
            existing.sha256 = sha256
            existing.blob = blob
            existing.shard_id = shard_id
            existing.received += 1
            return existing, old_blob
        item = Item(
            item_id=uuid.uuid4().hex,
            name=name,
            part_name=part_name,
            size=size,
            sha256=sha256,
            received=1,
            blob=blob,
            shard_id=shard_id,
            content_type=content_type_for(name),
            nested_content_type=nested_content_type,
        )
        self._by_key[key] = item
        self.by_id[item.item_id] = item
        self.items.append(item)
        if part_name is not None:
            self.items_by_part.setdefault(part_name, []).append(item)
        return item, None

    def restore_item(self, item: Item) -> None:
        """Put back an item saved by an earlier run (see :mod:`persist`)."""
        self._by_key[(item.part_name, item.name)] = item
        self.by_id[item.item_id] = item
        self.items.append(item)
        if item.part_name is not None:
            self.items_by_part.setdefault(item.part_name, []).append(item)

    def add_shard(self, shard: Shard) -> Shard:
        existing = self.shards_by_id.get(shard.shard_id)
        if existing is not None:
            existing.status_name = shard.status_name
            existing.status_type = shard.status_type
            existing.event_timestamp = shard.event_timestamp
            existing.objects = shard.objects
            existing.metadata = shard.metadata
            self._note_processed(shard)
            return existing
        self._note_processed(shard)
        self.shards.append(shard)
        self.shards_by_id[shard.shard_id] = shard
        return shard

    def _note_processed(self, shard: Shard) -> None:
        waiting = (self.vocabulary.received[0], "references-ingest-queued")
        self.processed = self.processed or shard.status_name not in waiting

    @property
    def visible(self) -> bool:
        """Whether reads see the batch: like the real service plausibly, not before its first
        shard is processed (a direct image upload makes it visible at once)."""
        return self.processed or bool(self.items)

    def snapshot(self) -> dict[str, Any]:
        return {
            "batchType": self.batch_type,
            "batchContentType": self.content_type,
            "displayName": self.display_name,
            "count": self.count(),
            "items": [item.snapshot() for item in self.items],
            "shards": [
                {
                    "shardId": s.shard_id,
                    "statusName": s.status_name,
                    "statusType": s.status_type,
                    "objects": s.objects,
                }
                for s in self.shards
            ],
            "failedItems": [{"name": f.name, "reason": f.reason} for f in self.failed],
            "parts": [p.name for p in self.parts.values()],
        }


@dataclass
class Counters:
    puts: int = 0
    putsRejected: int = 0
    downloads: int = 0
    faultsInjected: int = 0
    webhooksSent: int = 0
    webhooksFailed: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(vars(self))


class Store:
    """The batches of the one emulated workspace."""

    def __init__(self, vocabulary: ShardVocabulary | None = None) -> None:
        self.vocabulary = vocabulary or ShardVocabulary.drawn(None)
        self.batches: dict[str, Batch] = {}
        self.batch_list: list[Batch] = []

    def get(self, batch_id: str) -> Batch | None:
        return self.batches.get(batch_id)

    def create(
        self,
        batch_id: str,
        *,
        display_name: str | None,
        batch_type: BatchType,
        content_type: ContentType,
        upload_mode: UploadMode,
    ) -> Batch:
        batch = Batch(
            batch_id=batch_id,
            display_name=display_name or batch_id,
            batch_type=batch_type,
            content_type=content_type,
            upload_mode=upload_mode,
            vocabulary=self.vocabulary,
        )
        self.batches[batch_id] = batch
        self.batch_list.append(batch)
        return batch
