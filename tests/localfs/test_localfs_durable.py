"""A group of files written and made durable together: one syncfs where it is trusted, else an
fsync per file; a failure fails only what it may have touched."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rfbatch.localfs import durable
from rfbatch.localfs.durable import GroupFlush
from tests.localfs.support import break_syncfs, syncfs_flush


def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = durable._syncfs_or_raise, os.fsync

    def syncfs(fd: int) -> None:
        calls["syncfs"] += 1
        real_syncfs(fd)

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(durable, "_syncfs_or_raise", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_watched_folder_is_flushed_once_for_the_whole_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = syncfs_flush(tmp_path)
    calls = count_calls(monkeypatch)
    writes = [(tmp_path / f"f{i}", bytes([i]) * (100 + i)) for i in range(20)]

    assert flush.write_all(writes) == [None] * 20
    flush.close()

    assert calls == {"syncfs": 1, "fsync": 0}
    for path, data in writes:
        assert path.read_bytes() == data


def test_a_folder_never_watched_gets_an_fsync_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = GroupFlush()
    calls = count_calls(monkeypatch)
    writes = [(tmp_path / f"f{i}", b"data") for i in range(3)]

    assert flush.write_all(writes) == [None] * 3

    assert calls == {"syncfs": 0, "fsync": 3}
    assert [p.read_bytes() for p, _ in writes] == [b"data"] * 3


def test_an_unknown_file_system_gets_an_fsync_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "_fs_type", lambda folder: 0x65735546)  # FUSE
    flush = GroupFlush()
    flush.watch(tmp_path)
    calls = count_calls(monkeypatch)

    assert not flush.uses_syncfs(tmp_path)
    assert flush.write_all([(tmp_path / "a", b"x"), (tmp_path / "b", b"y")]) == [None, None]
    assert calls == {"syncfs": 0, "fsync": 2}


def test_a_file_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    flush = GroupFlush()
    flush.watch(tmp_path)
    writes = [(tmp_path / "a", b"1"), (tmp_path / "missing" / "b", b"2"), (tmp_path / "c", b"3")]

    first, second, third = flush.write_all(writes)
    flush.close()

    assert first is None
    assert third is None
    assert isinstance(second, FileNotFoundError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_a_failed_syncfs_fails_and_removes_every_file_of_its_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = syncfs_flush(tmp_path)
    break_syncfs(monkeypatch)
    results = flush.write_all([(tmp_path / "a", b"1"), (tmp_path / "b", b"2")])
    flush.close()

    assert [getattr(r, "errno", None) for r in results] == [errno.EIO, errno.EIO]
    assert list(tmp_path.iterdir()) == []
