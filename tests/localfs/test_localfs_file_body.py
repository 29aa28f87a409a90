"""A video read from disk as a request body: streamed again and again, never sent changed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rfbatch.errors import FileChangedError, FileUnreadableError
from rfbatch.localfs.file_body import FileBody
from rfbatch.localfs.reading import READ_CHUNK_SIZE
from rfbatch.transfer import BodySource


def body_for(path: Path, chunk_size: int = READ_CHUNK_SIZE) -> FileBody:
    """A body for ``path`` as it is now, as the upload makes one from the scan's record."""
    st = path.stat()
    return FileBody(path, chunk_size, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


async def collect(body: BodySource) -> bytes:
    return b"".join([chunk async for chunk in body.chunks()])


async def read_meddling(body: BodySource, meddle: Callable[[int], None]) -> int:
    """Read ``body``, calling ``meddle(bytes_so_far)`` after each chunk; return bytes read."""
    got = 0
    async for chunk in body.chunks():
        got += len(chunk)
        meddle(got)
    return got


async def test_file_body_streams_the_file_in_chunks_again_and_again(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    data = os.urandom(5000)
    path.write_bytes(data)
    body = body_for(path, chunk_size=1024)
    assert isinstance(body, BodySource)
    assert body.length == 5000
    assert [len(c) async for c in body.chunks()] == [1024] * 4 + [904]
    assert await collect(body) == data
    assert await collect(body) == data


async def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert await collect(body_for(path)) == b""


async def test_file_changed_since_it_was_seen_is_refused_before_any_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    body = body_for(path)
    path.write_bytes(b"three")
    with pytest.raises(FileChangedError) as info:
        await collect(body)
    assert str(path) in str(info.value)


async def test_file_that_grows_while_read_never_yields_its_last_chunk(tmp_path: Path) -> None:
    path = tmp_path / "growing.mp4"
    path.write_bytes(b"a" * 3000)
    body = body_for(path, chunk_size=1000)
    got: list[int] = []

    def grow(so_far: int) -> None:
        got.append(so_far)
        if so_far == 1000:
            with path.open("ab") as fh:
                fh.write(b"more")

    with pytest.raises(FileChangedError, match=r"grew|changed"):
        await read_meddling(body, grow)
    assert got == [1000, 2000]


async def test_file_rewritten_in_place_with_the_same_size_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "same-size.jpg"
    path.write_bytes(b"a" * 3000)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    body = body_for(path, chunk_size=1000)
    got: list[int] = []

    def rewrite(so_far: int) -> None:
        got.append(so_far)
        if so_far == 1000:
            with path.open("r+b") as fh:
                fh.write(b"b" * 1000)

    with pytest.raises(FileChangedError):
        await read_meddling(body, rewrite)
    assert got == [1000, 2000]


async def test_file_replaced_while_read_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "replaced.jpg"
    path.write_bytes(b"a" * 2000)
    body = body_for(path, chunk_size=1000)
    other = tmp_path / "other.jpg"

    def replace(_so_far: int) -> None:
        # Same size and mtime under the same name: only the inode tells.
        other.write_bytes(b"b" * 2000)
        st = path.stat()
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        other.replace(path)

    with pytest.raises(FileChangedError, match="replaced"):
        await read_meddling(body, replace)


async def test_file_removed_while_read_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    path.write_bytes(b"a" * 2000)
    body = body_for(path, chunk_size=1000)
    with pytest.raises(FileChangedError, match="removed"):
        await read_meddling(body, lambda _: path.unlink())


async def test_missing_file_and_directory_are_unreadable(tmp_path: Path) -> None:
    with pytest.raises(FileUnreadableError):
        await collect(FileBody(tmp_path / "nope.jpg", size=0, mtime_ns=0))
    with pytest.raises(FileUnreadableError, match="regular"):
        await collect(body_for(tmp_path))
    path = tmp_path / "later-gone.jpg"
    path.write_bytes(b"x")
    body = body_for(path)
    path.unlink()
    with pytest.raises(FileUnreadableError):
        await collect(body)


async def test_file_swapped_before_reading_is_refused_by_its_inode(tmp_path: Path) -> None:
    path = tmp_path / "swapped.mp4"
    path.write_bytes(b"a" * 2000)
    body = body_for(path, chunk_size=1000)
    other = tmp_path / "other.mp4"
    other.write_bytes(b"b" * 2000)
    st = path.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(path)
    with pytest.raises(FileChangedError, match="replaced since it was scanned"):
        await collect(body)


async def test_an_inode_of_zero_is_not_compared(tmp_path: Path) -> None:
    # What file systems without stable inodes report: the size and mtime still guard the file.
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"v" * 1500)
    st = path.stat()
    body = FileBody(path, 1000, size=1500, mtime_ns=st.st_mtime_ns, inode=0)
    assert await collect(body) == b"v" * 1500
