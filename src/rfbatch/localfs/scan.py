"""Find media files under source folders, streaming, without ever holding a whole listing.

A walk is a plain generator over ``os.scandir`` run in a worker thread a chunk at a time, so a
folder of a million files costs one chunk of memory and the event loop never waits on a disk.
``DirEntry`` answers ``is_dir``/``is_symlink`` from the directory listing itself and caches its
``stat``, so a no-op scan costs one ``stat`` per candidate file and nothing per ignored one.

Filtering, in the order it is applied:

* ``ignore_names`` (shell globs on the basename; defaults cover partial downloads, temporary and
  hidden files) apply to files *and* directories, so hidden folders are never entered;
* symbolic links are not followed unless ``follow_symlinks`` is set (one with a media name is
  reported as skipped); when they are followed, every directory's ``(st_dev, st_ino)`` is
  remembered so a link back up the tree cannot loop;
* the extension decides the kind (image or video); anything else is ignored;
* ``include`` / ``exclude`` globs are matched against the path relative to the root (see
  :func:`compile_glob`); a directory matched by an ``exclude`` pattern is not entered at all;
* files younger than ``min_age_seconds`` are left for a later pass;
* files over ``max_size``, unreadable files or folders, links that loop and special files
  (FIFOs, sockets, devices) with a media extension are reported as :class:`Skipped` records,
  never silently dropped, so the manifest can say why a file was not sent.

Nothing here writes to a source folder.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import itertools
import os
import re
import stat
import time
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from rfbatch.localfs.dircache import DirCache
from rfbatch.media import (
    FoundFile,
    MediaKind,
    Skipped,
    SkipReason,
    SourceSpec,
)

DEFAULT_CHUNK_SIZE = 1000

# FoundFile is a frozen dataclass: its __init__ sets each field through object.__setattr__,
# a microsecond a file, a fifth of a walk that finds nothing new. The walk fills the slots
# directly instead (same fields, same values; tests/localfs holds the two ways equal).
_FOUND_FIELDS = ("location", "root", "rel", "size", "mtime_ns", "inode", "kind", "_path")
_new_found = object.__new__
(
    _set_location,
    _set_root,
    _set_rel,
    _set_size,
    _set_mtime,
    _set_inode,
    _set_kind,
    _set_path,
) = (getattr(FoundFile, name).__set__ for name in _FOUND_FIELDS)


def found_file(
    location: str, root: Path, rel: str, size: int, mtime_ns: int, inode: int, kind: MediaKind
) -> FoundFile:
    """``FoundFile(location, root, rel, size, mtime_ns, inode, kind)``, built in half the time."""
    found: FoundFile = _new_found(FoundFile)
    _set_location(found, location)
    _set_root(found, root)
    _set_rel(found, rel)
    _set_size(found, size)
    _set_mtime(found, mtime_ns)
    _set_inode(found, inode)
    _set_kind(found, kind)
    _set_path(found, None)
    return found


NOT_FOLLOWED = "a symbolic link; set [scan] follow_symlinks = true to send what it points to"


@dataclass
class ScanStats:
    """What a scan saw. ``skipped`` counts :class:`Skipped` records by reason."""

    files: int = 0
    bytes: int = 0
    directories: int = 0
    ignored: int = 0
    """Names matched by ``ignore_names``, non-media files, unfollowed links, special files."""
    ignored_by_name: int = 0
    """Of ``ignored``, the names matched by ``ignore_names`` (files and folders)."""
    excluded: int = 0
    """Files or folders left out by ``include``/``exclude``."""
    too_young: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def count_skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob, matched against a POSIX path relative to the source root.

    ``*`` and ``?`` never cross a ``/``; ``**`` crosses any number of folders (``a/**/b.jpg``
    matches ``a/b.jpg`` and ``a/x/y/b.jpg``); ``[...]`` is a character class (``[!...]``
    negated). As in ``.gitignore``, a pattern without a ``/`` matches the basename at any
    depth, and a leading ``/`` anchors a pattern at the root.
    """
    anchored = "/" in pattern.rstrip("/")
    body = pattern.lstrip("/")
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == "*":
            if body.startswith("**", i):
                i += 2
                if i < n and body[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = body.find("]", i + 2 if body.startswith(("[!", "[]"), i) else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                inner = body[i + 1 : end].replace("\\", "\\\\").replace("[", "\\[")
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                elif inner.startswith("^"):
                    inner = "\\" + inner
                out.append("[" + inner + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(prefix + "".join(out), re.DOTALL)


class _Rules:
    """A :class:`SourceSpec` compiled for fast per-entry decisions."""

    __slots__ = ("exclude", "ignore", "include", "kinds", "plain", "root", "selecting", "spec")

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        ignore = "|".join(f"(?:{fnmatch.translate(p)})" for p in spec.ignore_names)
        self.ignore = re.compile(ignore) if ignore else None
        self.include = tuple(compile_glob(p) for p in spec.include)
        self.exclude = tuple(compile_glob(p) for p in spec.exclude)
        # Checked once per file of a million-file walk: most sources have no globs at all.
        self.selecting = bool(self.include or self.exclude)
        # Rules that decide a regular file by its name and size alone (no globs, no age or size
        # limit, links not followed): the walk then takes such a file in a few steps.
        self.plain = not (
            self.selecting
            or spec.min_age_seconds
            or spec.max_size is not None
            or spec.follow_symlinks
        )
        self.root = spec.root
        # Extension -> kind in one lookup; an extension in both sets is an image, as kind_of says.
        kinds: dict[str, MediaKind] = dict.fromkeys(spec.video_extensions, "video")
        kinds.update(dict.fromkeys(spec.image_extensions, "image"))
        self.kinds = kinds

    def name_ignored(self, name: str) -> bool:
        return self.ignore is not None and self.ignore.match(name) is not None

    def dir_excluded(self, rel: str) -> bool:
        # A pattern such as "cache/**" matches "cache/"; one such as "tmp" matches "x/tmp".
        with_slash = rel + "/"
        return any(p.fullmatch(rel) or p.fullmatch(with_slash) for p in self.exclude)

    def file_selected(self, rel: str) -> bool:
        if not self.selecting:
            return True
        if self.include and not any(p.fullmatch(rel) for p in self.include):
            return False
        return not any(p.fullmatch(rel) for p in self.exclude)

    def kind(self, name: str) -> MediaKind | None:
        """The kind of a file named ``name`` (a basename), as ``media.kind_of`` tells it."""
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem.strip("."):
            return None  # no extension, or a hidden name such as ".jpg"
        return self.kinds.get(ext.lower())


@functools.lru_cache(maxsize=64)
def _rules_for(spec: SourceSpec) -> _Rules:
    # A watcher asks once per event; compiling the globs each time would dominate.
    return _Rules(spec)


def _file_verdict(
    rules: _Rules,
    stats: ScanStats,
    path: str,
    rel: str,
    kind: MediaKind,
    st: os.stat_result,
    now_ns: int,
) -> FoundFile | Skipped | None:
    """Apply the stat-based filters to one file that passed the name-based ones."""
    spec = rules.spec
    if not stat.S_ISREG(st.st_mode):
        # Never opened: reading a FIFO would block until some writer came along.
        stats.count_skip("not-a-regular-file")
        return Skipped(Path(path), "not-a-regular-file", _file_type(st.st_mode), kind=kind)
    if spec.min_age_seconds and now_ns - st.st_mtime_ns < spec.min_age_seconds * 1e9:
        stats.too_young += 1
        return None
    if spec.max_size is not None and st.st_size > spec.max_size:
        stats.count_skip("too-large")
        return Skipped(
            Path(path),
            "too-large",
            f"{st.st_size} bytes is over the limit of {spec.max_size}",
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            kind=kind,
        )
    stats.files += 1
    stats.bytes += st.st_size
    return found_file(path, spec.root, rel, st.st_size, st.st_mtime_ns, st.st_ino, kind)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return f"not a regular file: {name}"
    return "not a regular file"


def _not_followed(rules: _Rules, stats: ScanStats, path: str, rel: str) -> Skipped | None:
    # A link named like media is reported (the user may expect it sent); others, such as
    # linked folders, are passed over like any non-media name.
    kind = rules.kind(os.path.basename(path))
    if kind is None or not rules.file_selected(rel):
        stats.ignored += 1
        return None
    stats.count_skip("symlink-not-followed")
    return Skipped(Path(path), "symlink-not-followed", NOT_FOLLOWED, kind=kind)


def _unreadable_entry(stats: ScanStats, path: str, exc: OSError, kind: MediaKind) -> Skipped:
    reason: SkipReason = "symlink-loop" if exc.errno == errno.ELOOP else "unreadable"
    stats.count_skip(reason)
    return Skipped(Path(path), reason, exc.strerror or type(exc).__name__, kind=kind)


def _unreadable_dir(stats: ScanStats, path: str, exc: OSError) -> Skipped:
    stats.count_skip("unreadable-directory")
    return Skipped(Path(path), "unreadable-directory", exc.strerror or type(exc).__name__)


def _walk(
    rules: _Rules,
    stats: ScanStats,
    start: str | None = None,
    start_rel: str = "",
    cache: DirCache | None = None,
    *,
    quick: bool = False,
) -> Generator[FoundFile | Skipped, None, None]:
    """Depth-first walk of one source (or of the folder ``start`` below its root).

    Only one directory handle is open at a time; pending folders wait as paths on a stack.
    Each listing is remembered in ``cache``; a ``quick`` walk lists only the folders whose
    mtime moved since (see :mod:`rfbatch.localfs.dircache`). A walk that reaches its end
    makes ``cache`` forget the folders it no longer found (deleted, moved away).
    """
    spec = rules.spec
    follow = spec.follow_symlinks
    visited: set[tuple[int, int]] = set()
    reached: set[str] = set()
    prefix = start_rel + "/" if start_rel else ""
    stack: list[tuple[str, str]] = [(start or str(spec.root), prefix)]
    folders = 0  # listed, or known unchanged: what the watcher should be watching
    while stack:
        dir_path, rel_prefix = stack.pop()
        dst: os.stat_result | None = None
        if follow or cache is not None:
            try:
                dst = os.stat(dir_path) if follow else os.lstat(dir_path)
            except OSError as exc:
                yield _unreadable_dir(stats, dir_path, exc)
                continue
            if cache is not None:
                reached.add(dir_path)
        if follow and dst is not None:
            key = (dst.st_dev, dst.st_ino)
            if key in visited:
                stats.count_skip("symlink-loop")
                yield Skipped(Path(dir_path), "symlink-loop", "folder already scanned")
                continue
            visited.add(key)
        if quick and cache is not None and dst is not None:
            known = cache.unchanged(dir_path, dst)
            if known is not None:
                folders += 1
                stack.extend(known)
                continue
        try:
            listing = os.scandir(dir_path)
        except OSError as exc:
            yield _unreadable_dir(stats, dir_path, exc)
            continue
        folders += 1
        stats.directories += 1
        pushed, young, whole = len(stack), stats.too_young, True
        # One clock reading per folder: min-age needs no finer resolution than that.
        now_ns = time.time_ns()
        with listing:
            while True:
                try:
                    entry = next(listing)
                except StopIteration:
                    break
                except OSError as exc:
                    whole = False
                    yield _unreadable_dir(stats, dir_path, exc)
                    break
                item = _examine_entry(rules, stats, entry, rel_prefix, follow, now_ns, stack)
                if item is not None:
                    yield item
        if cache is not None and dst is not None:
            # What this listing pushed are exactly this folder's subfolders.
            cache.record(dir_path, dst, stack[pushed:], whole=whole and stats.too_young == young)
    if cache is not None and start is None:
        # Only once the walk of the whole source is complete: a walk of one subtree, or one
        # stopped early, has not seen the rest.
        cache.forget_missing(reached)
        cache.folders = folders


def _examine_entry(
    rules: _Rules,
    stats: ScanStats,
    entry: os.DirEntry[str],
    rel_prefix: str,
    follow: bool,
    now_ns: int,
    stack: list[tuple[str, str]],
) -> FoundFile | Skipped | None:
    name = entry.name
    ignore = rules.ignore
    if ignore is not None and ignore.match(name) is not None:
        stats.ignored += 1
        stats.ignored_by_name += 1
        return None
    rel = rel_prefix + name
    if rules.plain and entry.is_file(follow_symlinks=False):
        # The common case, checked first: a regular file (the listing says so; no link to
        # follow) under rules that only look at its name and its stat.
        kind = rules.kind(name)
        if kind is None:
            stats.ignored += 1
            return None
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None  # deleted between listing and stat: nothing to report
        except OSError as exc:
            return _unreadable_entry(stats, entry.path, exc, kind)
        if not stat.S_ISREG(st.st_mode):  # replaced by something else since the listing
            return _file_verdict(rules, stats, entry.path, rel, kind, st, now_ns)
        stats.files += 1
        stats.bytes += st.st_size
        return found_file(entry.path, rules.root, rel, st.st_size, st.st_mtime_ns, st.st_ino, kind)
    try:
        if not follow and entry.is_symlink():
            return _not_followed(rules, stats, entry.path, rel)
        is_dir = entry.is_dir(follow_symlinks=follow)
    except OSError as exc:
        # A link that loops (a.jpg -> b.jpg -> a.jpg) cannot even be classified: a media name
        # is reported, so the user learns why it was not sent.
        kind = rules.kind(name)
        if kind is None or not rules.file_selected(rel):
            stats.ignored += 1
            return None
        return _unreadable_entry(stats, entry.path, exc, kind)
    if is_dir:
        if rules.dir_excluded(rel):
            stats.excluded += 1
        else:
            stack.append((entry.path, rel + "/"))
        return None
    kind = rules.kind(name)
    if kind is None:
        stats.ignored += 1
        return None
    if rules.selecting and not rules.file_selected(rel):
        stats.excluded += 1
        return None
    try:
        st = entry.stat(follow_symlinks=follow)
    except FileNotFoundError:
        if follow and entry.is_symlink():
            stats.count_skip("unreadable")
            return Skipped(Path(entry.path), "unreadable", "dangling symbolic link", kind=kind)
        return None  # deleted between listing and stat: nothing to report
    except OSError as exc:
        return _unreadable_entry(stats, entry.path, exc, kind)
    return _file_verdict(rules, stats, entry.path, rel, kind, st, now_ns)


def examine_path(
    spec: SourceSpec, path: str | os.PathLike[str]
) -> Generator[FoundFile | Skipped, None, None]:
    """Apply ``spec``'s rules to one path reported by a watcher.

    A file yields at most one record; a folder (for example one moved in whole, which produces a
    single event) is walked. Paths outside the root, or below an ignored, excluded or (when links
    are not followed) linked folder, yield nothing: exactly what a scan would have found there.
    Blocking: run it in a worker thread.
    """
    rules = _rules_for(spec)
    stats = ScanStats()
    path_str = os.path.abspath(path)
    root = str(spec.root)
    rel = os.path.relpath(path_str, root)
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return
    rel = rel.replace(os.sep, "/")
    parts = rel.split("/")
    for depth, part in enumerate(parts[:-1], start=1):
        if rules.name_ignored(part) or rules.dir_excluded("/".join(parts[:depth])):
            return
    name = parts[-1]
    if rules.name_ignored(name):
        return
    if not spec.follow_symlinks:
        parent = os.path.dirname(path_str)
        expected = os.path.join(os.path.realpath(root), *parts[:-1])
        if os.path.realpath(parent) != expected:
            return
    try:
        st = os.stat(path_str) if spec.follow_symlinks else os.lstat(path_str)
    except FileNotFoundError:
        return
    except OSError as exc:
        kind = rules.kind(name)
        if kind is not None and rules.file_selected(rel):
            yield _unreadable_entry(stats, path_str, exc, kind)
        return
    if stat.S_ISLNK(st.st_mode):
        # Only reached when links are not followed: report it as a scan would.
        link = _not_followed(rules, stats, path_str, rel)
        if link is not None:
            yield link
        return
    if stat.S_ISDIR(st.st_mode):
        if not rules.dir_excluded(rel):
            yield from _walk(rules, stats, start=path_str, start_rel=rel)
        return
    kind = rules.kind(name)
    if kind is None or not rules.file_selected(rel):
        return
    item = _file_verdict(rules, stats, path_str, rel, kind, st, time.time_ns())
    if item is not None:
        yield item


def _take(items: Iterator[FoundFile | Skipped], n: int) -> list[FoundFile | Skipped]:
    return list(itertools.islice(items, n))


async def chunks_in_thread(
    items: Generator[FoundFile | Skipped, None, None], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> AsyncGenerator[list[FoundFile | Skipped], None]:
    """Yield what the blocking generator ``items`` produces, ``chunk_size`` at a time from a
    worker thread (one thread hand-off per chunk, not per file); close it at the end."""
    try:
        while chunk := await anyio.to_thread.run_sync(_take, items, chunk_size):
            yield chunk
    finally:
        items.close()


async def iter_scan_chunks(
    specs: Sequence[SourceSpec],
    *,
    stats: ScanStats | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    caches: Sequence[DirCache] | None = None,
    quick: bool = False,
) -> AsyncGenerator[list[FoundFile | Skipped], None]:
    """Every :class:`FoundFile` and :class:`Skipped` under ``specs``, in listing order, in
    lists of at most ``chunk_size``: what a worker thread walked in one call.

    Pass ``stats`` to have it filled in as the scan goes. ``caches`` (one per spec) remember
    each folder's listing; a ``quick`` scan lists only folders that changed since, and so
    yields what is new there. Handed on as chunks, not one by one: a no-op rescan of a big
    tree then costs the event loop one step per thousand files, not one per file.
    """
    stats = stats if stats is not None else ScanStats()
    for index, spec in enumerate(specs):
        cache = caches[index] if caches is not None else None
        walk = _walk(_rules_for(spec), stats, cache=cache, quick=quick)
        async with contextlib.aclosing(chunks_in_thread(walk, chunk_size)) as chunks:
            async for chunk in chunks:
                yield chunk


async def iter_scan(
    specs: Sequence[SourceSpec],
    *,
    stats: ScanStats | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    caches: Sequence[DirCache] | None = None,
    quick: bool = False,
) -> AsyncGenerator[FoundFile | Skipped, None]:
    """:func:`iter_scan_chunks` one item at a time (for callers that look at every item)."""
    walk = iter_scan_chunks(specs, stats=stats, chunk_size=chunk_size, caches=caches, quick=quick)
    async with contextlib.aclosing(walk) as chunks:
        async for chunk in chunks:
            for item in chunk:
                yield item


def split_found(chunk: list[FoundFile | Skipped]) -> tuple[list[FoundFile], list[Skipped]]:
    """A scan's chunk as its files and its skips (kept in order within each)."""
    files = [item for item in chunk if isinstance(item, FoundFile)]
    if len(files) == len(chunk):
        return files, []
    return files, [item for item in chunk if isinstance(item, Skipped)]


async def scan(
    specs: Sequence[SourceSpec],
    send: MemoryObjectSendStream[list[FoundFile]],
    *,
    skipped: MemoryObjectSendStream[Skipped] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ScanStats:
    """Send every file found under ``specs`` into ``send``, a chunk (a list) at a time, then
    close it (and ``skipped``).

    :class:`Skipped` records go to ``skipped`` one by one when given; they are always counted
    in the returned :class:`ScanStats`. A full stream blocks the walk: that is the backpressure.
    """
    stats = ScanStats()
    async with send:
        try:
            chunked = iter_scan_chunks(specs, stats=stats, chunk_size=chunk_size)
            async with contextlib.aclosing(chunked) as chunks:
                async for chunk in chunks:
                    files, skips = split_found(chunk)
                    if files:
                        await send.send(files)
                    if skipped is not None:
                        for item in skips:
                            await skipped.send(item)
        finally:
            if skipped is not None:
                await skipped.aclose()
    return stats
