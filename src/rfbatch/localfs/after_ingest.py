"""What happens to source files once their ingest is confirmed: moved elsewhere, or deleted.

Only ever called after the service has confirmed it holds the files (never before), so a crash
at any point loses nothing: a file not yet moved is simply moved on the next confirmation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import structlog

log = structlog.get_logger("rfbatch.after_ingest")


@dataclass(frozen=True, slots=True)
class Ingested:
    """A source file the service confirmed, and where it sits under its source folder."""

    path: Path
    rel: str | None


def _move_or_delete(files: Sequence[Ingested], move_to: Path | None) -> int:
    done = 0
    for f in files:
        try:
            if move_to is None:
                os.unlink(f.path)
            else:
                # The same layout as under the source folder, so equal names never collide.
                dest = move_to / (f.rel or f.path.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f.path, dest)
            done += 1
        except FileNotFoundError:
            continue  # already gone: nothing to do
        except OSError as exc:
            # One file that cannot be moved must not hold back the others; it stays in place.
            log.warning("source.cleanup_failed", path=str(f.path), error=str(exc))
    return done


@dataclass(frozen=True, slots=True)
class SourceCleanup:
    """Move confirmed source files under ``move_to``, or delete them when it is ``None``."""

    move_to: Path | None

    @property
    def action(self) -> str:
        return "delete" if self.move_to is None else "move"

    async def apply(self, files: Sequence[Ingested]) -> int:
        """Move or delete ``files``; return how many were moved or deleted."""
        return await anyio.to_thread.run_sync(_move_or_delete, files, self.move_to)
