"""The records the manifest keeps: states, kinds, and one row type per table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from rfbatch.errors import UnresumableRowError
from rfbatch.media import FoundFile, MediaKind

FileState = Literal[
    "seen", "settled", "packed", "uploading", "uploaded", "ingested", "skipped", "failed"
]
ShardState = Literal["packed", "uploading", "uploaded", "ingested", "failed"]
BatchKind = Literal["images", "videos"]
# ``empty``: sealed with no file to send (every file skipped, or a drain cut short before any
# was sent); the service never heard of it, and there is nothing more to do.
BatchState = Literal[
    "open", "sealed", "confirmed", "job_started", "job_done", "exported", "failed", "empty"
]
DownloadState = Literal["pending", "done", "failed"]

FILE_STATES: tuple[FileState, ...] = get_args(FileState)
SHARD_STATES: tuple[ShardState, ...] = get_args(ShardState)
BATCH_KINDS: tuple[BatchKind, ...] = get_args(BatchKind)
BATCH_STATES: tuple[BatchState, ...] = get_args(BatchState)
DOWNLOAD_STATES: tuple[DownloadState, ...] = get_args(DownloadState)

# Unchanged files in these states are never sent again.
DONE_STATES: frozenset[FileState] = frozenset({"uploaded", "ingested", "skipped"})
# Unchanged files in these states are in a shard right now; resume them with files_in_state.
IN_FLIGHT_STATES: frozenset[FileState] = frozenset({"packed", "uploading"})
# Retention: file states nothing changes any more (short of a changed file), and batch states
# with nothing left to do whatever the settings.
FINAL_FILE_STATES: tuple[FileState, ...] = ("uploaded", "ingested", "skipped", "failed")
DONE_BATCH_STATES: tuple[BatchState, ...] = ("exported", "failed", "empty")


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What one retention pass removed, and the manifest's bytes on disk before and after."""

    files: int = 0
    batches: int = 0
    shards: int = 0
    downloads: int = 0
    events: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


@dataclass(frozen=True, slots=True)
class FileRow:
    path: Path
    root: Path | None
    rel: str | None
    size: int
    mtime_ns: int
    inode: int
    kind: MediaKind | None
    state: FileState
    batch_id: str | None
    shard_id: str | None
    member_name: str | None
    attempts: int
    last_error: str | None
    updated_at: float

    def to_found(self) -> FoundFile:
        """The :class:`FoundFile` this row records (for resuming); needs root, rel and kind.

        Raises :class:`~rfbatch.errors.UnresumableRowError` for a row without them.
        """
        if self.root is None or self.rel is None or self.kind is None:
            raise UnresumableRowError(f"{self.path}: row has no scan details to resume from")
        return FoundFile(
            location=str(self.path),
            root=self.root,
            rel=self.rel,
            size=self.size,
            mtime_ns=self.mtime_ns,
            inode=self.inode,
            kind=self.kind,
        )


@dataclass(frozen=True, slots=True)
class ShardRow:
    shard_id: str
    batch_id: str
    state: ShardState
    file_count: int
    size: int
    """Bytes of the shard's files (the ``bytes`` column)."""
    attempts: int
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    kind: BatchKind
    state: BatchState
    expected_count: int
    job_id: str | None
    created_at: float
    updated_at: float
    info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DownloadMark:
    """One download to record (``Ledger.mark_downloads``); ``None`` keeps the stored value."""

    part_name: str | None
    file_name: str
    path: Path | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class DownloadRow:
    batch_id: str
    part_name: str
    """``""`` for a batch that is not split into parts."""
    file_name: str
    size: int | None
    state: DownloadState
    path: Path | None
    updated_at: float
