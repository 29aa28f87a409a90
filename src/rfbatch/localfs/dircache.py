"""What the last walk saw of each folder, so that a quick rescan lists only folders that changed.

Adding, removing or renaming an entry changes its folder's mtime; a file written in place does
not. A quick rescan therefore stats every known folder (a few thousand stats for a tree of a
million files in a camera's layout) and lists only those whose mtime moved, taking the
subfolders of the others from here; what it cannot see (a file rewritten in place, one that was
too young to take) is left to the events and to the full rescans, which list everything.

An mtime is trusted only when it was at least :data:`RACY_SECONDS` old when the folder was
listed: an entry added within the same clock tick as the listing would not move it (git's
"racily clean" problem). Memory is one small entry per folder, never per file: a folder's
subfolders are kept as the walk pushes them, (path, path relative to the root + "/"), so a
quick rescan re-enters them without building a string (the path is the very object that keys
the subfolder's own entry, so it costs nothing more).
"""

from __future__ import annotations

import os
import time

# An mtime this recent at listing time may hide an entry added in the same tick.
RACY_SECONDS = 2.0

Child = tuple[str, str]
"""A subfolder as a walk pushes it: its path, and its path relative to the root with a "/"."""

_NO_CHILDREN: tuple[Child, ...] = ()


class DirCache:
    """Folder path -> (mtime_ns, its subfolders), as the last listing found them."""

    __slots__ = ("_entries", "folders", "listed", "skipped")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, tuple[Child, ...]]] = {}
        self.listed = 0
        self.skipped = 0
        # Folders the last whole walk reached and could list (or knew unchanged): what an
        # inotify watcher of the same tree should be watching.
        self.folders = 0

    def __len__(self) -> int:
        return len(self._entries)

    def unchanged(self, path: str, st: os.stat_result) -> tuple[Child, ...] | None:
        """The subfolders of ``path`` if it has not changed since it was listed."""
        entry = self._entries.get(path)
        if entry is None or entry[0] != st.st_mtime_ns:
            return None
        self.skipped += 1
        return entry[1]

    def record(self, path: str, st: os.stat_result, children: list[Child], *, whole: bool) -> None:
        """Remember a listing of ``path``; ``whole`` is false when something in it must be
        looked at again (a file too young to take), so it is listed next time too."""
        self.listed += 1
        if not whole or time.time_ns() - st.st_mtime_ns < RACY_SECONDS * 1e9:
            self._entries.pop(path, None)
            return
        self._entries[path] = (st.st_mtime_ns, tuple(children) if children else _NO_CHILDREN)

    def forget_missing(self, seen: set[str]) -> None:
        """Drop the folders a walk to its end no longer found (deleted, moved away), so the
        cache holds only folders that still exist."""
        for path in [p for p in self._entries if p not in seen]:
            del self._entries[path]
