"""Fixtures for the local-disk tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.localfs.support import OLD, MakeFile, write_file


@pytest.fixture
def make_file(tmp_path: Path) -> MakeFile:
    """``make_file("a/b.jpg", b"data", mtime=...)`` creates a file under ``tmp_path / "src"``."""

    def make(rel: str, data: bytes = b"x", *, mtime: float | None = OLD) -> Path:
        return write_file(tmp_path / "src" / rel, data, mtime=mtime)

    return make
