"""Counters of one upload pass: what progress bars, summaries and metrics read.

Stages only add to a :class:`Tally`; readers take :meth:`Tally.snapshot`. All updates happen on
the event loop thread, so plain integers are enough.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# A daemon runs for months: keep every count, but only the latest problems by name.
RECENT_PROBLEMS = 10_000


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    found: int = 0
    found_bytes: int = 0
    unchanged: int = 0
    queued: int = 0
    queued_bytes: int = 0
    sent: int = 0
    sent_bytes: int = 0
    wire_bytes: int = 0
    shards: int = 0
    videos: int = 0
    requeued: int = 0
    # Files the scan passed over: not a media type that is sent, or matched by ignore_names
    # (``ignored_by_name`` of them).
    ignored: int = 0
    ignored_by_name: int = 0
    skipped_count: int = 0
    failed_count: int = 0
    skipped: deque[Failure] = field(default_factory=lambda: deque(maxlen=RECENT_PROBLEMS))
    failed: deque[Failure] = field(default_factory=lambda: deque(maxlen=RECENT_PROBLEMS))
    # Each file is counted once per outcome, however often it is seen. A one-shot run counts
    # the tree it found: every file, with its skips, in its first pass (``repeat_pass`` is set
    # for the passes that only resend what was requeued). The daemon (``new_only``) sees its
    # tree again on every rescan: it counts only files that are new or changed, and skips
    # that were not recorded before.
    repeat_pass: bool = False
    new_only: bool = False
    # What a progress display shows besides the counts: the phase a one-shot run is in
    # ("upload", then "confirm"), how many files each batch holds of those it was sent, and
    # how many files wait to settle right now (the settler's count, read at each refresh).
    phase: str = "upload"
    ingest: dict[str, tuple[int, int]] = field(default_factory=dict)  # batch: (count, expected)
    settling: Callable[[], int] = field(default=lambda: 0)

    def skip(self, path: str, reason: str) -> None:
        self.skipped_count += 1
        self.skipped.append(Failure(path, reason))

    def fail(self, path: str, reason: str) -> None:
        self.failed_count += 1
        self.failed.append(Failure(path, reason))

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, int) and not isinstance(v, bool) and k != "started"
        }
        out["seconds"] = round(self.seconds, 3)
        return out
