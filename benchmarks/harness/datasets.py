"""Deterministic data sets, generated once under ``benchmarks/data/`` and reused.

Images are real PNGs from :func:`rfbatch.samples.png_bytes`: a 16×16 noise picture grown to an
exact size with an ancillary chunk that decoders skip. Each file's size and pixels come from its
own seeded RNG, so generation can be split across processes and still give the same bytes.

Videos must pass the reference client's check (it opens each one with OpenCV before upload), so
each is a real clip (20 noise frames encoded by the reference venv's OpenCV, ``mp4v`` in MP4)
followed by one top-level ``free`` box that pads the file to the exact size. ``free``/``skip``
boxes are defined by ISO/IEC 14496-12 for exactly this (space a reader must ignore), so the file
stays a valid MP4 of the requested size; the padding is seeded pseudo-random bytes, not zeros,
so nothing along the way could compress it. Every padded file is re-opened with OpenCV after it
is written.

A data set is described by a marker ``<name>.json`` beside its folder; a marker that matches the
spec means the folder is reused as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from rfbatch.samples import png_bytes

GENERATOR_VERSION = 1
MiB = 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImageSet:
    name: str
    count: int
    min_bytes: int
    max_bytes: int
    seed: int
    # Files per sub-folder (0: one flat folder). The reference client does not recurse, so only
    # the rfbatch-only scenario uses sub-folders.
    per_dir: int = 0

    kind = "images"


@dataclass(frozen=True)
class VideoSet:
    name: str
    count: int
    size: int
    seed: int

    kind = "videos"


DataSpec = ImageSet | VideoSet


@dataclass(frozen=True)
class Dataset:
    spec: DataSpec
    path: Path
    files: int
    bytes: int

    def iter_files(self) -> Iterator[Path]:
        for root, _, names in os.walk(self.path):
            for name in sorted(names):
                yield Path(root) / name


def _marker(root: Path, spec: DataSpec) -> Path:
    return root / f"{spec.name}.json"


def _describe(spec: DataSpec) -> dict[str, object]:
    return {"kind": spec.kind, "version": GENERATOR_VERSION, **asdict(spec)}


def ensure(spec: DataSpec, root: Path, ref_python: str) -> Dataset:
    """The data set on disk: reused when its marker matches, generated otherwise.

    Under an exclusive lock per data set: two benchmarks starting at once would otherwise both
    see no marker, and one would delete the folder the other is writing.
    """
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{spec.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(spec, root, ref_python)


def _ensure_locked(spec: DataSpec, root: Path, ref_python: str) -> Dataset:
    folder = root / spec.name
    marker = _marker(root, spec)
    if marker.exists() and folder.is_dir():
        saved = json.loads(marker.read_text())
        if saved.get("spec") == _describe(spec):
            return Dataset(spec, folder, int(saved["files"]), int(saved["bytes"]))
    marker.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"  generating data set {spec.name} ...", file=sys.stderr, flush=True)
    if isinstance(spec, ImageSet):
        files, size = _make_images(spec, folder)
    else:
        files, size = _make_videos(spec, folder, root, ref_python)
    marker.write_text(json.dumps({"spec": _describe(spec), "files": files, "bytes": size}))
    return Dataset(spec, folder, files, size)


# --- images ---------------------------------------------------------------------------------


def image_path(spec: ImageSet, folder: Path, index: int) -> Path:
    name = f"img-{index:06d}.png"
    if spec.per_dir:
        return folder / f"d{index // spec.per_dir:04d}" / name
    return folder / name


def _write_image_range(spec: ImageSet, folder: str, start: int, stop: int) -> int:
    total = 0
    made: set[Path] = set()
    for i in range(start, stop):
        rng = random.Random(spec.seed * 1_000_003 + i)
        size = rng.randint(spec.min_bytes, spec.max_bytes) if spec.max_bytes else 0
        path = image_path(spec, Path(folder), i)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        data = png_bytes(16, 16, spec.seed * 1_000_003 + i, pad_to=size)
        path.write_bytes(data)
        total += len(data)
    return total


def _make_images(spec: ImageSet, folder: Path) -> tuple[int, int]:
    workers = max(1, min(4, os.cpu_count() or 1))
    step = max(1, -(-spec.count // (workers * 8)))
    ranges = [(s, min(s + step, spec.count)) for s in range(0, spec.count, step)]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_write_image_range, spec, str(folder), a, b) for a, b in ranges]
        total = sum(f.result() for f in futures)
    return spec.count, total


# --- videos ---------------------------------------------------------------------------------

CLIP_SCRIPT = Path(__file__).with_name("clip.py")


def free_box_header(size: int) -> bytes:
    """The header of a top-level MP4 ``free`` box of ``size`` bytes in all (header included)."""
    if size < 8:
        raise ValueError("a box is at least 8 bytes")
    if size < 2**32:
        return struct.pack(">I4s", size, b"free")
    return struct.pack(">I4sQ", 1, b"free", size)


def _make_videos(spec: VideoSet, folder: Path, root: Path, ref_python: str) -> tuple[int, int]:
    clip = root / "clip.mp4"
    if not clip.exists():
        subprocess.run([ref_python, str(CLIP_SCRIPT), "make", str(clip)], check=True, timeout=120)
    head = clip.read_bytes()
    pad = spec.size - len(head)
    if pad < 16:
        raise ValueError(f"videos must be larger than the {len(head)}-byte clip")
    paths = []
    for i in range(spec.count):
        block = random.Random(spec.seed * 1_000_003 + i).randbytes(_CHUNK)
        path = folder / f"video-{i:03d}.mp4"
        with path.open("wb") as fh:
            fh.write(head)
            header = free_box_header(pad)
            fh.write(header)
            left = pad - len(header)
            while left > 0:
                n = min(left, _CHUNK)
                fh.write(block[:n])
                left -= n
        if path.stat().st_size != spec.size:
            raise RuntimeError(f"{path} has the wrong size")
        paths.append(path)
    check_videos(ref_python, paths)
    return spec.count, spec.count * spec.size


def check_videos(ref_python: str, paths: list[Path]) -> None:
    """Open every file with the reference venv's OpenCV; raise unless each decodes."""
    out = subprocess.run(
        [ref_python, str(CLIP_SCRIPT), "check", *map(str, paths)],
        check=True,
        timeout=600,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        info = json.loads(line)
        if not (info["opened"] and info["frames"] > 0 and info["first_frame_decoded"]):
            raise RuntimeError(f"OpenCV cannot read {info['path']}: {info}")


# --- page cache -------------------------------------------------------------------------------


def _read_all(path: Path) -> int:
    n = 0
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(_CHUNK):
            n += len(chunk)
    return n


def warm(dataset: Dataset) -> int:
    """Read every file once so the timed runs start with a warm page cache."""
    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(_read_all, dataset.iter_files()))
