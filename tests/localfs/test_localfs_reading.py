"""Whether a file recorded earlier is still on disk as recorded, so it may be offered again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rfbatch.localfs.reading import ReadBuffers, still_as_recorded
from rfbatch.localfs.scan import examine_path
from rfbatch.media import FoundFile, SourceSpec
from tests.localfs.support import OLD, write_file


def recorded(path: Path) -> FoundFile:
    """The file as a scan records it."""
    [item] = examine_path(SourceSpec(path.parent), path)
    assert isinstance(item, FoundFile)
    return item


def test_a_file_as_it_was_recorded_is_still_as_recorded(tmp_path: Path) -> None:
    found = recorded(write_file(tmp_path / "a.jpg", b"12345"))
    assert still_as_recorded(found)


def test_a_resized_file_is_not(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.jpg", b"12345")
    found = recorded(path)
    write_file(path, b"123456")  # the same (old) mtime, another size
    assert os.stat(path).st_mtime_ns == found.mtime_ns
    assert not still_as_recorded(found)


def test_a_touched_file_is_not(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.jpg", b"12345")
    found = recorded(path)
    os.utime(path, (OLD + 60, OLD + 60))  # the same size, another mtime
    assert not still_as_recorded(found)


def test_a_removed_file_is_not(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.jpg", b"12345")
    found = recorded(path)
    path.unlink()
    assert not still_as_recorded(found)


def test_a_buffer_is_taken_again_only_once_no_view_of_it_is_left() -> None:
    buffers = ReadBuffers(16, keep=2)
    first = buffers.take()
    view = memoryview(first)[4:]  # what a transport keeps of a chunk it could not send whole
    second = buffers.take()
    assert second is not first
    held = memoryview(second)
    third = buffers.take()
    # Both kept ones are viewed: a new buffer, and the oldest is no longer kept.
    assert third is not first
    assert third is not second
    assert buffers.made == 3
    view.release()
    held.release()
    assert buffers.take() is second
    assert buffers.take() is third
    assert buffers.made == 3
    assert len(second) == len(third) == 16


def test_buffers_need_a_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadBuffers(0)
