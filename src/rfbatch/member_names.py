"""Flat tar member names for files that come from a tree.

The service stores the members of a shard flat, by basename, so ``a/img.jpg`` and ``b/img.jpg``
would collide. :func:`member_name` keeps the basename when it is free in the batch and otherwise
derives a distinct, deterministic name from the whole relative path:
``img--<8 hex of sha256(rel)>.jpg``. Names are made safe for any tar reader and file system:
no ``/``, ``\\``, ``:`` (``c:x.jpg`` reads as a drive path to Windows-minded tools, and the
service may be one), NUL or control characters, never ``.``/``..`` or a leading dot, the
extension kept, at most 255 bytes of UTF-8.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable

MAX_NAME_BYTES = 255
MAX_EXTENSION_BYTES = 16
HASH_HEX = 8
# Names the service gives a meaning to; a media file must never take one.
RESERVED_NAMES = frozenset({"notification_config.json"})
_FALLBACK_STEM = "file"


def member_name(rel: str, taken: Callable[[str], bool]) -> str:
    """The member name for the file at ``rel`` (POSIX, relative), given the names ``taken``.

    Deterministic: the same ``rel`` and the same taken names always give the same result.
    """
    basename = rel.rstrip("/").rpartition("/")[2]
    stem, ext = _split(_clean(basename))
    plain = stem + ext
    if len(plain.encode()) <= MAX_NAME_BYTES and _free(plain, taken):
        return plain
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_HEX]
    counter = 1
    while True:
        tag = f"--{digest}" if counter == 1 else f"--{digest}-{counter}"
        candidate = _fit(stem, tag + ext)
        if _free(candidate, taken):
            return candidate
        counter += 1


def _free(name: str, taken: Callable[[str], bool]) -> bool:
    return name not in RESERVED_NAMES and not taken(name)


def _clean(name: str) -> str:
    """Replace every character that is unsafe in a flat member name with ``_``."""
    chars = [
        "_" if c in "/\\:" or unicodedata.category(c) in ("Cc", "Cs", "Cf", "Zl", "Zp") else c
        for c in name
    ]
    cleaned = "".join(chars).strip()
    # A leading dot hides the file on most systems and ".." is a path component: neither here.
    if cleaned.startswith("."):
        cleaned = "_" + cleaned
    return cleaned


def _split(name: str) -> tuple[str, str]:
    """Split into stem and extension (with its dot); over-long "extensions" stay in the stem."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or len(ext.encode()) > MAX_EXTENSION_BYTES:
        return (name or _FALLBACK_STEM), ""
    return stem, dot + ext


def _fit(stem: str, suffix: str) -> str:
    """``stem + suffix`` cut (at a character boundary, in the stem) to ``MAX_NAME_BYTES``."""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    encoded = stem.encode()
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore").rstrip()
    return (stem or _FALLBACK_STEM) + suffix
