"""Whether a file recorded earlier is still on disk as recorded, so it may be offered again."""

from __future__ import annotations

import os
import threading
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
    tail = first[4:]  # what a transport keeps of a chunk it could not send whole
    first.release()
    second = buffers.take()
    assert second.obj is not tail.obj
    third = buffers.take()
    # Both kept ones are viewed: a new buffer, and the oldest is no longer kept.
    assert third.obj is not tail.obj
    assert third.obj is not second.obj
    assert buffers.made == 3
    tail.release()
    assert (second.nbytes, third.nbytes) == (16, 16)
    second_buffer, third_buffer = second.obj, third.obj
    second.release()
    third.release()
    assert buffers.take().obj is second_buffer
    assert buffers.take().obj is third_buffer
    assert buffers.made == 3


def test_shared_buffers_never_hand_one_out_twice() -> None:
    # Bodies read in different threads share them: a buffer is taken under a lock, as a view.
    buffers = ReadBuffers(8, keep=4)
    held: list[memoryview] = []

    def take_some() -> None:
        for _ in range(50):
            held.append(buffers.take())

    threads = [threading.Thread(target=take_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(view.obj) for view in held}) == len(held) == 200


def test_buffers_need_a_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadBuffers(0)
