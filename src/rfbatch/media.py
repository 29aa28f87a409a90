"""Which files are media, of which kind, and the records that carry a found file onward.

Extensions are kept lower-case and without the dot; matching ignores case, because cameras and
scanners write ``IMG_0001.JPG`` as readily as ``img_0001.jpg``.

:class:`SourceSpec` (a source folder and its rules), :class:`FoundFile` (a candidate as one
``stat`` saw it) and :class:`Skipped` (a file that cannot be taken, and why) live here, at the
bottom of the layers, because the scanner makes them, the manifest records them and the pipeline
moves them: none of those should have to import another to speak of a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rfbatch.errors import ConfigError

MediaKind = Literal["image", "video"]

# The set the reference client accepts for bulk image upload; the service rejects the rest.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"bmp", "dib", "jpeg", "jpg", "jpe", "jp2", "png", "webp"}
)
# The reference client's video list, less its audio-only MPEG-4 names (m4a, m4b, m4p, m4r): a
# folder of music is not a folder of videos, and the service would fail each one at decoding.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {"mp4", "mov", "avi", "mkv", "webm", "m4v", "flv", "wmv", "mpeg", "mpg", "3gp", "ogg"}
)


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


DEFAULT_IGNORE_NAMES: tuple[str, ...] = ("*.part", "*.tmp", "*.partial", ".*", "~*")

SkipReason = Literal[
    "empty-file",
    "too-large",
    "unreadable",
    "unreadable-directory",
    "symlink-loop",
    "not-a-regular-file",
    "symlink-not-followed",
]


@dataclass(frozen=True)
class SourceSpec:
    """One source folder and the rules for what to take from it.

    ``root`` is made absolute (without resolving symbolic links, so paths stay the ones the user
    wrote); extension sets are normalised to lower case without dots.
    """

    root: Path
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    image_extensions: frozenset[str] = IMAGE_EXTENSIONS
    video_extensions: frozenset[str] = VIDEO_EXTENSIONS
    ignore_names: tuple[str, ...] = DEFAULT_IGNORE_NAMES
    min_age_seconds: float = 0
    max_size: int | None = None
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        if self.min_age_seconds < 0:
            raise ConfigError(f"min_age_seconds must be >= 0, got {self.min_age_seconds}")
        if self.max_size is not None and self.max_size < 0:
            raise ConfigError(f"max_size must be >= 0, got {self.max_size}")
        # Frozen: normalise through object.__setattr__ so callers may pass lists and relative roots.
        object.__setattr__(self, "root", Path(os.path.abspath(self.root)))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "ignore_names", tuple(self.ignore_names))
        object.__setattr__(self, "image_extensions", normalize_extensions(self.image_extensions))
        object.__setattr__(self, "video_extensions", normalize_extensions(self.video_extensions))


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A candidate media file as seen by one ``stat``."""

    location: str
    """Absolute path (symbolic links not resolved), as the scan found it."""
    root: Path
    """The source root it was found under."""
    rel: str
    """POSIX path relative to ``root``."""
    size: int
    mtime_ns: int
    inode: int
    kind: MediaKind
    _path: Path | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """:attr:`location` as a :class:`~pathlib.Path`, built on first use.

        A rescan makes a record for every file and most are only checked against the manifest
        (by :attr:`location`): building a ``Path`` for each was an eighth of a no-op rescan.
        """
        path = self._path
        if path is None:
            path = Path(self.location)
            object.__setattr__(self, "_path", path)
        return path


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or folder that was found but cannot be taken, and why.

    ``size``, ``mtime_ns`` and ``kind`` are filled when known (a file over ``max_size`` has
    them), so the manifest can remember exactly which version was skipped.
    """

    path: Path
    reason: SkipReason
    detail: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    kind: MediaKind | None = None
