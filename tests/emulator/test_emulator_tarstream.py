"""The forward-only tar reader agrees with tarfile on every format tarfile writes."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from rfbatch.emulator.sinks import consume_tar
from rfbatch.emulator.tarstream import TarStreamError, iter_members

LONG = "x" * 150 + ".jpg"  # over ustar's 100-character name field


class Trickle:
    """A source that returns odd-sized pieces, as a socket would."""

    def __init__(self, data: bytes, step: int = 777) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        piece = self._data[self._pos : self._pos + n]
        self._pos += len(piece)
        return piece


def _archive(fmt: int, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "y" * (120 if fmt != tarfile.USTAR_FORMAT else 60)
        tar.addfile(link)
    return buf.getvalue()


def _read(data: bytes) -> list[tuple[str, int, bytes, str]]:
    out = []
    for info, body in iter_members(Trickle(data)):
        payload = body.read() if info.isreg() else b""
        out.append((info.name, info.type[0], payload, info.linkname))
    return out


def _reference(data: bytes) -> list[tuple[str, int, bytes, str]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            fh = tar.extractfile(info) if info.isreg() else None
            out.append((info.name, info.type[0], fh.read() if fh else b"", info.linkname))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_matches_tarfile(fmt: int) -> None:
    members = {
        "a.jpg": b"",
        "b.png": os.urandom(511),
        "c.webp": os.urandom(513),
        "dir/with/prefix/" + "p" * 90 + ".jpg": os.urandom(1500),
        "é-ünïcode.jpg": os.urandom(10),
    }
    if fmt != tarfile.USTAR_FORMAT:
        members[LONG] = os.urandom(4096)
    data = _archive(fmt, members)
    assert _read(data) == _reference(data)


def test_unread_member_bytes_are_skipped() -> None:
    data = _archive(tarfile.PAX_FORMAT, {"a.jpg": b"A" * 3000, "b.jpg": b"B" * 10})
    names = [info.name for info, _ in iter_members(Trickle(data))]
    assert names == ["a.jpg", "b.jpg", "link.jpg"]


def test_pax_size_override_is_honoured() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big.jpg")
        info.size = 20
        info.pax_headers = {"size": "20", "comment": "hello"}
        tar.addfile(info, io.BytesIO(b"z" * 20))
    [(name, _, payload, _)] = _read(buf.getvalue())
    assert (name, payload) == ("big.jpg", b"z" * 20)


def test_missing_end_blocks_are_accepted_and_trailing_data_ignored() -> None:
    data = _archive(tarfile.GNU_FORMAT, {"a.jpg": b"a" * 600})
    body = data.rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    assert [n for n, *_ in _read(body)] == ["a.jpg", "link.jpg"]
    assert [n for n, *_ in _read(data + b"garbage after the end")] == ["a.jpg", "link.jpg"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"not a tar" * 100, "bad header"),
        (_archive(tarfile.GNU_FORMAT, {"a.jpg": b"a" * 5000})[:1500], "unexpected end"),
    ],
)
def test_malformed_archives_raise(data: bytes, message: str) -> None:
    with pytest.raises(TarStreamError, match=message):
        _read(data)


def test_consume_tar_reports_an_error_and_keeps_nothing(tmp_path: object) -> None:
    from pathlib import Path

    blob_dir = Path(str(tmp_path))
    data = _archive(tarfile.GNU_FORMAT, {"a.jpg": b"a" * 100, "b.jpg": b"b" * 5000})[:2000]
    result = consume_tar(Trickle(data), blob_dir, 10_000)
    assert result.error is not None
    assert "unexpected end" in result.error
    assert result.members == []
    assert list(blob_dir.iterdir()) == []
