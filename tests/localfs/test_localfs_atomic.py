from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from rfbatch.errors import IncompleteBodyError, UnsafePathError
from rfbatch.localfs.atomic import (
    Move,
    SafeRoot,
    atomic_target,
    commit_many_sync,
    safe_extract_tar,
    safe_extract_tar_async,
    safe_join,
    sweep_stale_temps,
)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x.jpg",
        "a/../../x.jpg",
        "a/..",
        "..",
        "C:evil.jpg",
        "c:/evil.jpg",
        "a\\..\\b.jpg",
        "nul\x00.jpg",
        "new\nline.jpg",
        ".",
        "./",
    ],
)
def test_safe_join_refuses(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)


def test_safe_join_accepts_relative_names(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a.jpg") == tmp_path / "a.jpg"
    assert safe_join(tmp_path, "part-1/sub/a.jpg") == tmp_path / "part-1" / "sub" / "a.jpg"
    assert safe_join(tmp_path, "./a//b.jpg") == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, "..a.jpg") == tmp_path / "..a.jpg"


def test_safe_join_refuses_symlinks_leading_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "escape").symlink_to(tmp_path / "elsewhere")
    (out / "inside").symlink_to(out)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(out, "escape/x.jpg")
    assert safe_join(out, "inside/x.jpg") == out / "inside" / "x.jpg"


def test_atomic_target_is_hidden_unique_and_beside(tmp_path: Path) -> None:
    dest = tmp_path / ("é" * 200 + ".jpg")
    a, b = atomic_target(dest), atomic_target(dest)
    assert a != b
    assert a.parent == dest.parent
    assert a.name.startswith(".")
    assert a.name.endswith(".tmp")
    assert len(a.name.encode()) <= 255


def test_commit_puts_the_file_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "result.json"
    dest.write_bytes(b"old")
    tmp = atomic_target(dest)
    tmp.write_bytes(b"new content")
    assert commit_many_sync([Move(tmp, dest, expected_size=11)]) == [None]
    assert dest.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_commit_refuses_a_short_file_and_cleans_up(tmp_path: Path) -> None:
    dest = tmp_path / "result.json"
    dest.write_bytes(b"old")
    tmp = atomic_target(dest)
    tmp.write_bytes(b"short")
    [error] = commit_many_sync([Move(tmp, dest, expected_size=100)])
    assert isinstance(error, IncompleteBodyError)
    assert "expected 100" in str(error)
    assert dest.read_bytes() == b"old"
    assert not tmp.exists()


def test_commit_of_many_files_places_each_one_alone(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    dests = [tmp_path / "a.json", tmp_path / "sub" / "b.json", tmp_path / "c.json"]
    temps = [atomic_target(d) for d in dests]
    for tmp, data in zip(temps, [b"aa", b"bbb", b"c"], strict=True):
        tmp.write_bytes(data)
    results = commit_many_sync(
        [Move(temps[0], dests[0], 2), Move(temps[1], dests[1], 3), Move(temps[2], dests[2], 5)]
    )
    assert results[:2] == [None, None]
    assert isinstance(results[2], IncompleteBodyError)
    assert [d.read_bytes() for d in dests[:2]] == [b"aa", b"bbb"]
    assert not dests[2].exists()
    assert not any(t.exists() for t in temps)


def test_sweep_removes_only_what_a_killed_run_left(tmp_path: Path) -> None:
    left = atomic_target(tmp_path / "result.json")
    left.write_bytes(b"half")
    archive = make_tar(tmp_path / "p.tar", [(reg("a.json"), b"x")])
    # A run killed mid-unpack leaves its staging folder, named as safe_extract_tar names it.
    safe_extract_tar(archive, tmp_path / "out")
    staging = tmp_path / "out" / f".rfbatch-extract-{'0' * 12}.rfbatch.tmp"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "a.json").write_bytes(b"x")
    kept = [".hidden.json", "result.rfbatch.tmp", ".x.rfbatch.tmp", ".a.0123456789ab.tmp"]
    for name in kept:
        (tmp_path / name).write_bytes(b"mine")
    assert sweep_stale_temps(tmp_path) == 1
    assert sweep_stale_temps(tmp_path / "out") == 1
    assert not left.exists()
    assert listing(tmp_path / "out") == ["a.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "out", "p.tar"])
    assert sweep_stale_temps(tmp_path / "missing") == 0


def make_tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w"
) -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def reg(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def directory(name: str) -> tarfile.TarInfo:
    return special(name, tarfile.DIRTYPE)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_extracts_tar_and_tar_gz(tmp_path: Path, mode: str) -> None:
    archive = make_tar(
        tmp_path / f"part.{mode}",
        [
            (directory("./"), None),
            (directory("./sub"), None),
            (reg("./a.json"), b'{"a": 1}'),
            (reg("sub/b.json"), b"bbb"),
            (reg("c.json"), b"first"),
            (reg("c.json"), b"second wins"),
            (directory("empty"), None),
        ],
        mode,
    )
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.json").write_bytes(b"stale")
    placed = safe_extract_tar(archive, out)
    assert placed == [out / "a.json", out / "sub" / "b.json", out / "c.json"]
    assert (out / "a.json").read_bytes() == b'{"a": 1}'
    assert (out / "sub" / "b.json").read_bytes() == b"bbb"
    assert (out / "c.json").read_bytes() == b"second wins"
    # Nothing but the files: no staging folder, no empty folders from the archive.
    assert listing(out) == ["a.json", "c.json", "sub", "sub/b.json"]


@pytest.mark.parametrize(
    ("hostile", "needle"),
    [
        ((reg("/etc/evil"), b"x"), "absolute"),
        ((reg("../evil"), b"x"), "'..'"),
        ((reg("sub/../../evil"), b"x"), "'..'"),
        ((directory("../up"), None), "'..'"),
        ((directory("/abs"), None), "absolute"),
        ((reg("C:evil"), b"x"), "absolute"),
        ((reg("a\\..\\evil"), b"x"), "backslash"),
        ((special("link", tarfile.SYMTYPE, "/etc/passwd"), None), "symbolic link"),
        ((special("inner", tarfile.SYMTYPE, "a.json"), None), "symbolic link"),
        ((special("hard", tarfile.LNKTYPE, "a.json"), None), "hard link"),
        ((special("dev", tarfile.CHRTYPE), None), "device"),
        ((special("blk", tarfile.BLKTYPE), None), "device"),
        ((special("pipe", tarfile.FIFOTYPE), None), "FIFO"),
    ],
)
def test_hostile_archives_are_refused_and_leave_nothing(
    tmp_path: Path, hostile: tuple[tarfile.TarInfo, bytes | None], needle: str
) -> None:
    archive = make_tar(tmp_path / "bad.tar", [(reg("a.json"), b"good"), hostile])
    out = tmp_path / "out"
    with pytest.raises(UnsafePathError) as info:
        safe_extract_tar(archive, out)
    assert needle in str(info.value)
    assert repr(hostile[0].name) in str(info.value)
    assert listing(out) == []
    assert not (tmp_path / "evil").exists()


def test_member_conflicting_with_a_folder_is_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bad.tar", [(reg("x"), b"file"), (reg("x/y"), b"inside")])
    with pytest.raises(UnsafePathError, match="'x/y'"):
        safe_extract_tar(archive, tmp_path / "out")
    assert listing(tmp_path / "out") == []


def test_symlink_in_destination_leading_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim").mkdir()
    (out / "sub").symlink_to(tmp_path / "victim")
    archive = make_tar(tmp_path / "p.tar", [(reg("sub/x.json"), b"x")])
    with pytest.raises(UnsafePathError, match="outside"):
        safe_extract_tar(archive, out)
    assert list((tmp_path / "victim").iterdir()) == []
    assert listing(out) == ["sub"]


async def test_truncated_archive_is_incomplete_and_leaves_nothing(tmp_path: Path) -> None:
    whole = make_tar(tmp_path / "p.tar.gz", [(reg("a.json"), os.urandom(50_000))], "w:gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:20_000])
    out = tmp_path / "out"
    with pytest.raises(IncompleteBodyError, match=r"cut\.tar\.gz"):
        await safe_extract_tar_async(cut, out)
    assert listing(out) == []


def test_safe_root_checks_a_link_in_the_last_component(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "secret").write_text("x")
    (out / "leak.jpg").symlink_to(tmp_path / "secret")
    (out / "alias.jpg").symlink_to(out / "real.jpg")
    root = SafeRoot(out)
    with pytest.raises(UnsafePathError, match="outside"):
        root.join("leak.jpg")
    assert root.join("alias.jpg") == out / "alias.jpg"
    assert root.join("plain.jpg") == out / "plain.jpg"
