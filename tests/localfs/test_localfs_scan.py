from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from rfbatch.errors import ConfigError
from rfbatch.localfs.scan import (
    _FOUND_FIELDS,
    ScanStats,
    _rules_for,
    compile_glob,
    examine_path,
    found_file,
    iter_scan,
    scan,
)
from rfbatch.media import FoundFile, Skipped, SourceSpec, kind_of
from tests.localfs.support import MakeFile, write_file


async def collect(*specs: SourceSpec, stats: ScanStats | None = None) -> list[FoundFile | Skipped]:
    return [item async for item in iter_scan(specs, stats=stats)]


def found_rels(items: list[FoundFile | Skipped]) -> set[str]:
    return {i.rel for i in items if isinstance(i, FoundFile)}


def skips(items: list[FoundFile | Skipped]) -> dict[str, str]:
    return {i.path.name: i.reason for i in items if isinstance(i, Skipped)}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root (folders included) with its size and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


async def test_finds_media_with_stat_fields(make_file: MakeFile, tmp_path: Path) -> None:
    a = make_file("a.jpg", b"12345")
    b = make_file("sub/deeper/B.PNG", b"xy")
    v = make_file("sub/clip.mp4", b"video")
    make_file("notes.txt")
    make_file("sub/readme")
    stats = ScanStats()
    items = await collect(SourceSpec(tmp_path / "src"), stats=stats)
    by_rel = {i.rel: i for i in items if isinstance(i, FoundFile)}
    assert set(by_rel) == {"a.jpg", "sub/deeper/B.PNG", "sub/clip.mp4"}
    for path, rel, kind in ((a, "a.jpg", "image"), (b, "sub/deeper/B.PNG", "image")):
        st = path.stat()
        got = by_rel[rel]
        assert got.path == path
        assert got.path.is_absolute()
        assert got.root == tmp_path / "src"
        assert (got.size, got.mtime_ns, got.inode, got.kind) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            kind,
        )
    assert by_rel["sub/clip.mp4"].kind == "video"
    assert by_rel["sub/clip.mp4"].path == v
    assert (stats.files, stats.bytes, stats.directories, stats.ignored) == (3, 12, 3, 2)


async def test_ignored_names_and_hidden_folders(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("keep.jpg")
    for rel in (
        "upload.jpg.part",
        "x.tmp",
        "y.partial",
        ".hidden.jpg",
        "~lock.jpg",
        ".cache/inside.jpg",
        ".git/objects/pic.png",
        "ok/.thumbs/t.jpg",
    ):
        make_file(rel)
    items = await collect(SourceSpec(tmp_path / "src"))
    assert found_rels(items) == {"keep.jpg"}

    custom = SourceSpec(tmp_path / "src", ignore_names=("~*",))
    assert found_rels(await collect(custom)) == {
        "keep.jpg",
        ".hidden.jpg",
        ".cache/inside.jpg",
        ".git/objects/pic.png",
        "ok/.thumbs/t.jpg",
    }


async def test_include_exclude_globs(make_file: MakeFile, tmp_path: Path) -> None:
    for rel in (
        "a.jpg",
        "b.png",
        "cam1/2024/x.jpg",
        "cam1/2024/y.png",
        "cam2/z.jpg",
        "cache/c.jpg",
        "deep/cache/d.jpg",
        "v.mp4",
    ):
        make_file(rel)
    src = tmp_path / "src"
    assert found_rels(await collect(SourceSpec(src, include=("*.jpg",)))) == {
        "a.jpg",
        "cam1/2024/x.jpg",
        "cam2/z.jpg",
        "cache/c.jpg",
        "deep/cache/d.jpg",
    }
    assert found_rels(await collect(SourceSpec(src, include=("cam1/**",)))) == {
        "cam1/2024/x.jpg",
        "cam1/2024/y.png",
    }
    stats = ScanStats()
    got = await collect(SourceSpec(src, exclude=("cache", "*.png", "cam2/**")), stats=stats)
    assert found_rels(got) == {"a.jpg", "cam1/2024/x.jpg", "v.mp4"}
    # The "cache" folders and cam2 ("cam2/**") are pruned whole, not walked file by file:
    # only the root, cam1, cam1/2024 and deep are listed.
    assert stats.directories == 4
    assert found_rels(await collect(SourceSpec(src, exclude=("/cache/",)))) == {
        "a.jpg",
        "b.png",
        "cam1/2024/x.jpg",
        "cam1/2024/y.png",
        "cam2/z.jpg",
        "deep/cache/d.jpg",
        "v.mp4",
    }


@pytest.mark.parametrize(
    ("pattern", "rel", "matches"),
    [
        ("*.jpg", "a.jpg", True),
        ("*.jpg", "x/y/a.jpg", True),
        ("*.jpg", "a.png", False),
        ("x/*.jpg", "x/a.jpg", True),
        ("x/*.jpg", "x/y/a.jpg", False),
        ("x/*.jpg", "z/x/a.jpg", False),
        ("x/**/a.jpg", "x/a.jpg", True),
        ("x/**/a.jpg", "x/1/2/a.jpg", True),
        ("**/a.jpg", "a.jpg", True),
        ("x/**", "x/anything/at/all.jpg", True),
        ("/a.jpg", "sub/a.jpg", False),
        ("/a.jpg", "a.jpg", True),
        ("img_??.jpg", "img_01.jpg", True),
        ("img_??.jpg", "img_1.jpg", False),
        ("img_[0-4].jpg", "img_3.jpg", True),
        ("img_[!0-4].jpg", "img_3.jpg", False),
        ("img_[!0-4].jpg", "img_7.jpg", True),
        ("a+b(1).jpg", "a+b(1).jpg", True),
    ],
)
def test_compile_glob(pattern: str, rel: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(rel)) is matches


async def test_min_age_and_max_size(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("old.jpg", b"a" * 10)
    make_file("fresh.jpg", b"b" * 10, mtime=None)
    big = make_file("big.jpg", b"c" * 100)
    stats = ScanStats()
    items = await collect(
        SourceSpec(tmp_path / "src", min_age_seconds=600, max_size=50), stats=stats
    )
    assert found_rels(items) == {"old.jpg"}
    [skipped] = [i for i in items if isinstance(i, Skipped)]
    assert skipped.path == big
    assert skipped.reason == "too-large"
    assert (skipped.size, skipped.mtime_ns, skipped.kind) == (100, big.stat().st_mtime_ns, "image")
    assert stats.too_young == 1
    assert stats.skipped == {"too-large": 1}


async def test_symlinks_skipped_unless_followed_and_loops_end(
    make_file: MakeFile, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_file("real/a.jpg")
    outside = write_file(tmp_path / "outside" / "o.jpg")
    (src / "link_dir").symlink_to(src / "real")
    (src / "link_file.jpg").symlink_to(outside)
    (src / "real" / "loop").symlink_to(src)
    (src / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")

    assert found_rels(await collect(SourceSpec(src))) == {"real/a.jpg"}

    stats = ScanStats()
    with anyio.fail_after(20):
        items = await collect(SourceSpec(src, follow_symlinks=True), stats=stats)
    found = [i for i in items if isinstance(i, FoundFile)]
    # real/ is reached either directly or through link_dir, and only once either way.
    assert sum(1 for f in found if f.rel.endswith("a.jpg")) == 1
    assert "link_file.jpg" in found_rels(items)
    reasons = [i.reason for i in items if isinstance(i, Skipped)]
    assert reasons.count("unreadable") == 1  # the dangling link
    assert reasons.count("symlink-loop") >= 1
    assert stats.skipped["symlink-loop"] == reasons.count("symlink-loop")


async def test_unreadable_directory_is_reported_and_skipped(
    make_file: MakeFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_file("ok/a.jpg")
    locked = make_file("locked/b.jpg").parent
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = await collect(SourceSpec(tmp_path / "src"))
    assert found_rels(items) == {"ok/a.jpg"}
    [skipped] = [i for i in items if isinstance(i, Skipped)]
    assert (skipped.path, skipped.reason, skipped.detail) == (
        locked,
        "unreadable-directory",
        "Permission denied",
    )


async def test_missing_root_is_reported(tmp_path: Path) -> None:
    items = await collect(SourceSpec(tmp_path / "absent"))
    assert [(type(i), getattr(i, "reason", None)) for i in items] == [
        (Skipped, "unreadable-directory")
    ]


async def test_scan_never_writes_in_the_source(make_file: MakeFile, tmp_path: Path) -> None:
    for i in range(30):
        make_file(f"d{i % 3}/img{i}.jpg", b"z" * i)
    make_file("skip.txt")
    src = tmp_path / "src"
    before = snapshot(src)
    src_mtime = src.stat().st_mtime_ns
    await collect(SourceSpec(src, max_size=10, follow_symlinks=True))
    assert snapshot(src) == before
    assert src.stat().st_mtime_ns == src_mtime


async def test_scan_streams_in_chunks_with_backpressure(
    make_file: MakeFile, tmp_path: Path
) -> None:
    for i in range(1500):
        make_file(f"many/{i}.jpg")
    stats = ScanStats()
    walker = iter_scan([SourceSpec(tmp_path / "src")], stats=stats, chunk_size=100)
    async with contextlib.aclosing(walker):
        first = await walker.__anext__()
        assert isinstance(first, FoundFile)
        # Only one chunk has been walked: the listing is never read ahead of its consumer.
        assert stats.files == 100

    send, receive = anyio.create_memory_object_stream[list[FoundFile]](1)
    got: list[list[FoundFile]] = []
    async with anyio.create_task_group() as tg:

        async def consume() -> None:
            async with receive:
                async for chunk in receive:
                    got.append(chunk)

        tg.start_soon(consume)
        result = await scan([SourceSpec(tmp_path / "src")], send, chunk_size=64)
    # Handed on a chunk at a time, one stream item per chunk, not per file.
    assert [len(chunk) for chunk in got] == [64] * 23 + [28]
    assert result.files == 1500
    assert len({f.path for chunk in got for f in chunk}) == 1500


async def test_scan_sends_skips_and_closes_streams(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("a.jpg", b"1")
    make_file("b.jpg", b"1234")
    files_tx, files_rx = anyio.create_memory_object_stream[list[FoundFile]](10)
    skips_tx, skips_rx = anyio.create_memory_object_stream[Skipped](10)
    stats = await scan([SourceSpec(tmp_path / "src", max_size=2)], files_tx, skipped=skips_tx)
    assert [f.rel for chunk in [x async for x in files_rx] for f in chunk] == ["a.jpg"]
    assert [s.path.name for s in [x async for x in skips_rx]] == ["b.jpg"]
    assert stats.skipped == {"too-large": 1}


async def test_several_sources(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("a.jpg")
    write_file(tmp_path / "other" / "v.mkv")
    items = await collect(SourceSpec(tmp_path / "src"), SourceSpec(tmp_path / "other"))
    assert {(i.root.name, i.rel) for i in items if isinstance(i, FoundFile)} == {
        ("src", "a.jpg"),
        ("other", "v.mkv"),
    }


def test_source_spec_normalises_and_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = SourceSpec(Path("rel/dir"), image_extensions=frozenset({".JPG"}), include=["*.jpg"])  # type: ignore[arg-type]
    assert spec.root == tmp_path / "rel" / "dir"
    assert spec.image_extensions == {"jpg"}
    assert spec.include == ("*.jpg",)
    with pytest.raises(ConfigError, match="min_age_seconds"):
        SourceSpec(tmp_path, min_age_seconds=-1)
    with pytest.raises(ConfigError, match="max_size"):
        SourceSpec(tmp_path, max_size=-5)


def examine(spec: SourceSpec, path: Path) -> list[FoundFile | Skipped]:
    return list(examine_path(spec, path))


def test_examine_path_applies_the_scan_rules(make_file: MakeFile, tmp_path: Path) -> None:
    src = tmp_path / "src"
    spec = SourceSpec(src, exclude=("cache",), max_size=3)
    good = make_file("x/a.jpg")
    [found] = examine(spec, good)
    assert isinstance(found, FoundFile)
    assert (found.rel, found.root) == ("x/a.jpg", src)
    assert examine(spec, make_file(".hidden/b.jpg")) == []
    assert examine(spec, make_file("x/cache/c.jpg")) == []
    assert examine(spec, make_file("x/c.jpg.part")) == []
    assert examine(spec, make_file("x/c.txt")) == []
    assert examine(spec, write_file(tmp_path / "elsewhere.jpg")) == []
    assert examine(spec, src / "x" / "gone.jpg") == []
    [big] = examine(spec, make_file("big.jpg", b"1234"))
    assert isinstance(big, Skipped)
    assert big.reason == "too-large"
    # A folder (moved in whole, say) is walked.
    make_file("moved/in/one.jpg")
    make_file("moved/two.png")
    assert found_rels(examine(spec, src / "moved")) == {"moved/in/one.jpg", "moved/two.png"}


def test_examine_path_does_not_follow_links_unless_asked(
    make_file: MakeFile, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_file(tmp_path / "outside" / "o.jpg")
    (src).mkdir(parents=True, exist_ok=True)
    (src / "via").symlink_to(tmp_path / "outside")
    assert examine(SourceSpec(src), src / "via" / "o.jpg") == []
    [found] = examine(SourceSpec(src, follow_symlinks=True), src / "via" / "o.jpg")
    assert isinstance(found, FoundFile)
    assert found.rel == "via/o.jpg"


@pytest.mark.parametrize(
    "name", ["a.jpg", "a.JPG", ".jpg", "..jpg", ".a.png", "a", "a.", "...", "a.b.mp4", "x.tar.gz"]
)
def test_the_walk_tells_kinds_as_kind_of_does(name: str) -> None:
    # The walk looks extensions up in one table of its own; it must agree with kind_of, also
    # for an extension listed as both an image and a video.
    spec = SourceSpec(Path("/src"), video_extensions=frozenset({"mp4", "jpg"}))
    expected = kind_of(
        name, image_extensions=spec.image_extensions, video_extensions=spec.video_extensions
    )
    assert _rules_for(spec).kind(name) == expected


def test_the_walk_builds_found_files_as_their_constructor_does(tmp_path: Path) -> None:
    # found_file fills FoundFile's slots directly: a field added to FoundFile must be added
    # there too, or a walk would hand on records missing it.
    assert {f.name for f in dataclasses.fields(FoundFile)} == set(_FOUND_FIELDS)
    args = ("/src/a/b.jpg", tmp_path, "a/b.jpg", 12, 34, 56, "image")
    built, made = found_file(*args), FoundFile(*args)  # type: ignore[arg-type]
    assert built == made
    assert repr(built) == repr(made)
    assert hash(built) == hash(made)
    assert built.path == Path("/src/a/b.jpg")
