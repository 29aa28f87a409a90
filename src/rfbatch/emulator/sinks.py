"""Blocking consumers of upload bodies; they run in worker threads behind :mod:`pipe`.

Both keep a blob file per item (``store="files"``) or only its size and SHA-256
(``store="digests"``). Tar shards are read forward-only by :mod:`tarstream`, so a shard is never
buffered; members are checked before a byte of them is kept: only flat, regular files, no
``..``, no absolute paths, no links or devices.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rfbatch.emulator.model import IMAGE_HEAD_BYTES, is_image_name, looks_like_image
from rfbatch.emulator.pipe import CHUNK
from rfbatch.emulator.tarstream import MemberReader, Readable, TarStreamError, iter_members

NOTIFICATION_CONFIG = "notification_config.json"
_MAX_CONFIG_BYTES = 64 * 1024


@dataclass
class Blob:
    """One stored body: its size, digest and, in files mode, where its bytes are."""

    size: int
    sha256: str
    path: Path | None


class TooLargeError(Exception):
    """The body is over the size limit; nothing was kept."""


def store_blob(source: Readable, blob_dir: Path | None, limit: int | None = None) -> Blob:
    """Hash (and in files mode write) everything ``source`` yields."""
    digest = hashlib.sha256()
    size = 0
    path = blob_dir / uuid.uuid4().hex if blob_dir is not None else None
    out: IO[bytes] | None = path.open("wb") if path is not None else None
    try:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooLargeError(f"body is over {limit} bytes")
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    except BaseException:
        if out is not None:
            out.close()
            assert path is not None
            path.unlink(missing_ok=True)
        raise
    if out is not None:
        out.close()
    return Blob(size=size, sha256=digest.hexdigest(), path=path)


@dataclass
class StagedMember:
    name: str
    blob: Blob


@dataclass
class TarResult:
    """What one tar shard held, before it is committed to its batch."""

    members: list[StagedMember] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notification: dict[str, Any] | None = None
    error: str | None = None
    size: int = 0

    def discard(self) -> None:
        for member in self.members:
            if member.blob.path is not None:
                member.blob.path.unlink(missing_ok=True)
        self.members.clear()


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a member cannot be an item, or None when it can (see the module docstring)."""
    name = member.name
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return "unsafe-path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "unsafe-path"
    if member.islnk() or member.issym():
        return "unsupported-member-type"
    if not member.isreg():
        return "unsupported-member-type"
    if len([p for p in parts if p not in ("", ".")]) != 1:
        return "nested-path"
    return None


def consume_tar(
    source: Readable,
    blob_dir: Path | None,
    max_image_bytes: int,
    *,
    check_content: bool = False,
) -> TarResult:
    """Unpack a streamed tar shard into staged blobs; never raises for a bad archive.

    With ``check_content`` a member whose first bytes are not an image's fails
    (``invalid-image-content``) instead of being kept.
    """
    result = TarResult()
    counted = _Counting(source)
    try:
        for member, body in iter_members(counted):
            _consume_member(member, body, result, blob_dir, max_image_bytes, check_content)
    except (TarStreamError, OSError, ValueError) as exc:
        result.discard()
        result.error = f"invalid-archive: {exc}"
    result.size = counted.count
    return result


def _consume_member(
    member: tarfile.TarInfo,
    body: MemberReader,
    result: TarResult,
    blob_dir: Path | None,
    max_image_bytes: int,
    check_content: bool,
) -> None:
    if member.isdir():
        return
    problem = member_problem(member)
    name = member.name.replace("\\", "/").split("/")[-1]
    if problem is not None:
        result.failed.append((member.name, problem))
        return
    if name == NOTIFICATION_CONFIG:
        result.notification = _read_config(body, member.size)
        return
    if not is_image_name(name):
        result.failed.append((name, "unsupported-file-type"))
        return
    if member.size > max_image_bytes:
        result.failed.append((name, "file-size-limit-exceeded"))
        return
    source: Readable = body
    if check_content:
        head = _read_head(body, IMAGE_HEAD_BYTES)
        if not looks_like_image(head):
            result.failed.append((name, "invalid-image-content"))
            return  # the rest of the member is skipped by the reader
        source = _Prefixed(head, body)
    result.members.append(StagedMember(name=name, blob=store_blob(source, blob_dir)))


def _read_head(body: Readable, size: int) -> bytes:
    head = b""
    while len(head) < size:
        piece = body.read(size - len(head))
        if not piece:
            break
        head += piece
    return head


class _Prefixed:
    """``head`` (already read from ``rest``) followed by whatever ``rest`` still holds."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            cut = len(self._head) if size < 0 else size
            data, self._head = self._head[:cut], self._head[cut:]
            return data
        return self._rest.read(size)


def _read_config(body: MemberReader, size: int) -> dict[str, Any] | None:
    if size > _MAX_CONFIG_BYTES:
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(body.read())
        if isinstance(data, dict):
            return data
    return None


class _Counting:
    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        return data
