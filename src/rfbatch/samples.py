"""Deterministic sample media for the demo, tests and benchmarks: real PNG files."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def png_bytes(width: int, height: int, seed: int, *, pad_to: int = 0) -> bytes:
    """A valid RGB PNG of the given size with seeded noise; ``pad_to`` grows it with an ancillary
    chunk (decoders skip it) so tests and benchmarks get exact file sizes cheaply."""
    rng = random.Random(seed)
    row = bytes(rng.getrandbits(8) for _ in range(width * 3))
    raw = b"".join(b"\x00" + row[i:] + row[:i] for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    body = chunk(b"IDAT", zlib.compress(raw, 1))
    end = chunk(b"IEND", b"")
    missing = pad_to - (len(head) + len(body) + len(end))
    if missing > 12:
        filler = rng.randbytes(missing - 12)
        body += chunk(b"rfBp", filler)
    return head + body + end


def write_images(
    folder: Path, count: int, *, seed: int = 0, min_bytes: int = 0, max_bytes: int = 0
) -> list[Path]:
    """Write ``count`` PNGs named ``img-00000.png``...; sizes drawn between min and max bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        size = rng.randint(min_bytes, max_bytes) if max_bytes else 0
        path = folder / f"img-{i:05d}.png"
        path.write_bytes(png_bytes(16, 16, seed * 1_000_003 + i, pad_to=size))
        paths.append(path)
    return paths
