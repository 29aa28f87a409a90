"""Write results to disk safely: names checked, files complete or absent, never outside the folder.

Names in a download listing and members of a result archive come from the server, so each is
checked by :func:`safe_join` before anything is created. Every file is written under a hidden
temporary name in its final folder (:func:`atomic_target`), fsynced, and renamed into place
(:func:`commit_many_sync`): a crash leaves either the old file or the new one, never half of one.
Archives are unpacked into a temporary folder first and only then moved into place
(:func:`safe_extract_tar`). What a killed run left under those temporary names is removed by
:func:`sweep_stale_temps`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from rfbatch.errors import IncompleteBodyError, UnsafePathError

TEMP_SUFFIX = ".rfbatch.tmp"
_EXTRACT_PREFIX = ".rfbatch-extract-"
# The names atomic_target and safe_extract_tar make (a 12-hex-digit tag, then TEMP_SUFFIX), and
# only those: a sweep must never take a file that is not rfbatch's own leftover.
_TAG = r"[0-9a-f]{12}" + re.escape(TEMP_SUFFIX)
_STALE_TEMP_RE = re.compile(rf"^\..+\.{_TAG}$|^{re.escape(_EXTRACT_PREFIX)}{_TAG}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_COPY_BUFFER = 1 << 20
_MAX_NAME_BYTES = 255


def _check_name(name: str, what: str, *, allow_root: bool = False) -> list[str]:
    """The safe components of a relative POSIX ``name``, or :class:`UnsafePathError`.

    With ``allow_root``, a name that is the folder itself (``.``, ``./``) gives ``[]``.
    """
    if not name:
        raise UnsafePathError(f"refusing {what}: empty name")
    if _CONTROL_RE.search(name):
        raise UnsafePathError(f"refusing {what} {name!r}: control character in name")
    if "\\" in name:
        raise UnsafePathError(f"refusing {what} {name!r}: backslash in name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (JSON can spell them) name no file the service could have made.
        raise UnsafePathError(f"refusing {what} {name!r}: not valid Unicode") from None
    if name.startswith("/") or _DRIVE_RE.match(name):
        raise UnsafePathError(f"refusing {what} {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"refusing {what} {name!r}: '..' in path")
    if not parts and not allow_root:
        raise UnsafePathError(f"refusing {what} {name!r}: no file name")
    if any(len(p.encode("utf-8")) > _MAX_NAME_BYTES for p in parts):
        raise UnsafePathError(f"refusing {what} {name!r}: a path component is over 255 bytes")
    return parts


class SafeRoot:
    """:func:`safe_join` for many names under one ``root``, resolved once.

    The root's real path is read when this is made, and each parent folder's once: make one
    per batch of names (a listing page), not one per run, so a link swapped in meanwhile is
    seen by the next batch. Per name, only the last component is looked at (``lstat``), since
    only a symbolic link there could lead elsewhere.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self._prefix = self._real_root.rstrip(os.sep) + os.sep
        self._real_folders: dict[Path, str] = {}

    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._prefix)

    def join(self, name: str) -> Path:
        """``root / name``, or :class:`UnsafePathError` (see :func:`safe_join`)."""
        parts = _check_name(name, "file name")
        path = self.root.joinpath(*parts)
        folder = path.parent
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            real_folder = self._real_folders[folder] = os.path.realpath(folder)
        inside = self._inside(real_folder)
        if inside:
            try:
                last = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                pass  # nothing there yet: it will be made inside
            else:
                if stat.S_ISLNK(last.st_mode):
                    inside = self._inside(os.path.realpath(path))
        if not inside:
            raise UnsafePathError(
                f"refusing file name {name!r}: resolves outside the output folder"
            )
        return path


def safe_join(root: Path, name: str) -> Path:
    """``root / name`` for a relative POSIX ``name`` that stays inside ``root``.

    Refuses (:class:`UnsafePathError`) empty names, absolute paths, drive letters, backslashes,
    ``..`` components, NUL and control characters, lone surrogates, components no file system
    takes (over 255 bytes), and any path that resolves outside ``root`` through a symbolic link
    already on disk.
    """
    return SafeRoot(root).join(name)


# Temporary names need to be unique, not secret: 48 random bits from a generator seeded once
# from the OS, not a uuid4 per file (a getrandom(2) call each, slow on some virtual machines).
_TAGS = random.Random()


def _tag() -> str:
    """12 hex digits, as :data:`_STALE_TEMP_RE` expects."""
    return f"{_TAGS.getrandbits(48):012x}"


def atomic_target(dest: Path) -> Path:
    """A unique hidden temporary path beside ``dest``, for writing before :func:`commit_many_sync`.

    Hidden and ending in ``.tmp``, so no scanner (rfbatch's included) mistakes it for a result.
    """
    tag = f".{_tag()}{TEMP_SUFFIX}"
    room = _MAX_NAME_BYTES - 1 - len(tag)
    stem = dest.name.encode()[:room].decode("utf-8", "ignore")
    return dest.with_name(f".{stem}{tag}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Move:
    """A finished temporary file and where it goes; ``expected_size`` is checked first."""

    tmp: Path
    dest: Path
    expected_size: int | None = None


def commit_many_sync(moves: Sequence[Move]) -> list[Exception | None]:
    """Rename finished temporary files into place; one result per move (``None``: in place).

    Every ``tmp`` must already be fsynced by its writer. A file of other than its
    ``expected_size`` is refused with :class:`~rfbatch.errors.IncompleteBodyError`; a refused or
    failed move removes its ``tmp``, so no partial file is left behind. Each folder is flushed
    once, after all of its renames: a rename is durable only then, and one flush serves them
    all. Blocking: run it in a worker thread.
    """
    results: list[Exception | None] = []
    folders: dict[Path, list[int]] = {}
    for index, move in enumerate(moves):
        try:
            if move.expected_size is not None:
                size = move.tmp.stat().st_size
                if size != move.expected_size:
                    raise IncompleteBodyError(
                        f"{move.dest.name}: wrote {size} bytes, expected {move.expected_size}"
                    )
            os.replace(move.tmp, move.dest)
        except (OSError, IncompleteBodyError) as exc:
            with contextlib.suppress(OSError):
                move.tmp.unlink()
            results.append(exc)
            continue
        results.append(None)
        folders.setdefault(move.dest.parent, []).append(index)
    for folder, indexes in folders.items():
        try:
            _fsync_dir(folder)
        except OSError as exc:
            for index in indexes:
                results[index] = exc
    return results


def sweep_stale_temps(folder: Path) -> int:
    """Remove temporary files a killed run left in ``folder`` (blocking); return how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not _STALE_TEMP_RE.match(entry.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def safe_extract_tar(archive: Path, dest_dir: Path) -> list[Path]:
    """Unpack a ``.tar`` or ``.tar.gz`` into ``dest_dir``; return the files placed, in order.

    Only regular files and folders are accepted, with names checked like :func:`safe_join`:
    links, devices, FIFOs, absolute names and ``..`` raise :class:`UnsafePathError` naming the
    member; a truncated or corrupt archive raises :class:`IncompleteBodyError`. Everything is
    unpacked into a hidden temporary folder inside ``dest_dir`` first and moved into place
    only when the whole archive was read, so a hostile or truncated archive leaves nothing
    behind. Blocking: see :func:`safe_extract_tar_async`.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = dest_dir / f"{_EXTRACT_PREFIX}{_tag()}{TEMP_SUFFIX}"
    staging.mkdir()
    try:
        try:
            names = _unpack(archive, staging)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # A cut-short download looks like this; fetching it again is the cure.
            raise IncompleteBodyError(
                f"archive {archive.name} is truncated or corrupt: {exc}"
            ) from exc
        root = SafeRoot(dest_dir)
        targets = [root.join("/".join(parts)) for parts in names]
        for parts, target in zip(names, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*parts), target)
        for folder in {t.parent for t in targets}:
            _fsync_dir(folder)
        return targets
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def safe_extract_tar_async(archive: Path, dest_dir: Path) -> list[Path]:
    """:func:`safe_extract_tar` in a worker thread."""
    return await anyio.to_thread.run_sync(safe_extract_tar, archive, dest_dir)


def _describe(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    return f"unsupported member type {member.type!r}"


def _unpack(archive: Path, staging: Path) -> list[list[str]]:
    """Write the archive's files under ``staging``; return each file's name components."""
    files: dict[tuple[str, ...], None] = {}
    # "r|*" reads the archive as a stream: one pass, compressed or not, no seeking.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            # "./" often heads archives made with `tar -C dir .`: it is the folder itself.
            parts = _check_name(member.name, "archive member", allow_root=member.isdir())
            if member.isdir():
                _ensure_dir(staging, parts, member.name)
                continue
            if not member.isreg():
                raise UnsafePathError(
                    f"refusing archive member {member.name!r}: {_describe(member)}"
                )
            _ensure_dir(staging, parts[:-1], member.name)
            target = staging.joinpath(*parts)
            if target.is_dir():
                raise UnsafePathError(
                    f"refusing archive member {member.name!r}: a folder of that name exists"
                )
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has a data stream
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, _COPY_BUFFER)
                out.flush()
                os.fsync(out.fileno())
            files[tuple(parts)] = None
    return [list(parts) for parts in files]


def _ensure_dir(staging: Path, parts: list[str], member_name: str) -> None:
    folder = staging.joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UnsafePathError(
            f"refusing archive member {member_name!r}: a file of that name exists"
        ) from exc
