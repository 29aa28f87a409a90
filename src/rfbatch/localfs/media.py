"""Which files are media, and of which kind.

Extensions are kept lower-case and without the dot; matching ignores case, because cameras and
scanners write ``IMG_0001.JPG`` as readily as ``img_0001.jpg``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

MediaKind = Literal["image", "video"]

# The set the reference client accepts for bulk image upload; the service rejects the rest.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"bmp", "dib", "jpeg", "jpg", "jpe", "jp2", "png", "webp"}
)
VIDEO_EXTENSIONS: frozenset[str] = frozenset({"mp4", "mov", "avi", "mkv", "webm", "m4v"})


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """Lower-case ``extensions`` and drop any leading dot: ``{".JPG"}`` becomes ``{"jpg"}``."""
    return frozenset(ext.lower().lstrip(".") for ext in extensions if ext.strip("."))


def extension_of(name: str | os.PathLike[str]) -> str:
    """The lower-case extension of a file name, without the dot (``""`` when there is none)."""
    # String operations rather than PurePath: this runs once per file of a million-file scan.
    base = os.fspath(name).rpartition("/")[2]
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem.strip("."):
        return ""
    return ext.lower()


def kind_of(
    path: str | os.PathLike[str],
    *,
    image_extensions: frozenset[str] = IMAGE_EXTENSIONS,
    video_extensions: frozenset[str] = VIDEO_EXTENSIONS,
) -> MediaKind | None:
    """``"image"`` or ``"video"`` by extension (any case), or ``None`` for anything else."""
    ext = extension_of(path)
    if ext in image_extensions:
        return "image"
    if ext in video_extensions:
        return "video"
    return None
