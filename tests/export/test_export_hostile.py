"""Hostile listings and archives are refused, and nothing lands outside the output folder.

The emulator will not store such names, so these tests run against :mod:`fake_staging`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.pipeline.export import export_batch
from tests.export.fake_staging import (
    SIGNATURE,
    FakeBatch,
    FakeFile,
    FakeStaging,
    hostile_tar,
    running_fake,
    safe_tar,
)
from tests.export.support import export_settings, fast_services, tree

GOOD = {f"good-{i}.bin": bytes([i]) * (100 + i) for i in range(7)}


@pytest.fixture
async def fake() -> AsyncIterator[FakeStaging]:
    async with running_fake(FakeStaging()) as staging:
        yield staging


def outside(tmp_path: Path, out: Path, state: Path) -> list[str]:
    """Every file under ``tmp_path`` that is neither in the output nor in the state folder."""
    return [
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if not p.is_dir() and out not in p.parents and state not in p.parents
    ]


async def test_hostile_names_are_refused_and_the_rest_arrive(
    fake: FakeStaging, tmp_path: Path
) -> None:
    hostile = [
        "../escaped.bin",
        "sub/../../escaped2.bin",
        "/tmp/rfbatch-absolute.bin",
        "nul\x00byte.bin",
        "back\\slash.bin",
        "C:evil.bin",
        "",
    ]
    files = [FakeFile(n, b"x" * 10) for n in hostile]
    files[3:3] = [FakeFile(n, d) for n, d in GOOD.items()]
    files.append(FakeFile("nested/dir/ok.bin", b"nested"))
    files.append(FakeFile("gone.bin", None))  # 404: a fetch that fails for good
    fake.add("hostile", FakeBatch("sharded-batch", {None: files}))
    out = tmp_path / "deep" / "out"
    state = tmp_path / "state"
    settings = export_settings(fake.base_url, state, page_size=4)

    async with fast_services(settings) as services:
        result = await export_batch(services, "hostile", out)
        rows = {r.file_name: r.state for r in await services.manifest.list_downloads("hostile")}

    assert tree(out) == {**GOOD, "nested/dir/ok.bin": b"nested"}
    assert outside(tmp_path, out, state) == []
    assert list((tmp_path / "deep").iterdir()) == [out]
    failed = {f.file_name: f.reason for f in result.failed}
    assert set(failed) == {*hostile, "gone.bin"}
    assert "'..' in path" in failed["../escaped.bin"]
    assert "'..' in path" in failed["sub/../../escaped2.bin"]
    assert "absolute path" in failed["/tmp/rfbatch-absolute.bin"]
    assert "control character" in failed["nul\x00byte.bin"]
    assert "backslash" in failed["back\\slash.bin"]
    assert "absolute path" in failed["C:evil.bin"]
    assert "404" in failed["gone.bin"]
    assert not any(SIGNATURE in reason for reason in failed.values())
    assert (result.downloaded, len(result.failed)) == (len(GOOD) + 1, len(hostile) + 1)
    assert rows["gone.bin"] == "failed"
    assert rows["../escaped.bin"] == "failed"
    assert rows["nested/dir/ok.bin"] == "done"


async def test_a_symlink_in_the_output_cannot_redirect_a_file(
    fake: FakeStaging, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    fake.add(
        "linked",
        FakeBatch("sharded-batch", {None: [FakeFile("link/x.bin", b"x"), FakeFile("y.bin", b"y")]}),
    )
    settings = export_settings(fake.base_url, tmp_path / "state")

    async with fast_services(settings) as services:
        result = await export_batch(services, "linked", out)

    assert list(elsewhere.iterdir()) == []
    assert [(f.file_name, "outside the output folder" in f.reason) for f in result.failed] == [
        ("link/x.bin", True)
    ]
    assert (out / "y.bin").read_bytes() == b"y"


@pytest.mark.parametrize("gz", [False, True])
async def test_hostile_archives_are_refused_whole(
    fake: FakeStaging, tmp_path: Path, gz: bool
) -> None:
    ext = ".tar.gz" if gz else ".tar"
    kinds = ["dotdot", "absolute", "symlink", "hardlink", "device"]
    archives = [FakeFile(f"{kind}{ext}", hostile_tar(kind, gz=gz)) for kind in kinds]
    fine = FakeFile(f"fine{ext}", safe_tar({"a.txt": b"A", "sub/b.txt": b"B"}, gz=gz))
    fake.add(
        "archives",
        FakeBatch(
            "multipart-batch",
            {"outputs": [*archives, fine], "../evil-part": [FakeFile("x.bin", b"x")]},
        ),
    )
    out = tmp_path / "out"
    state = tmp_path / "state"
    settings = export_settings(fake.base_url, state, page_size=2)

    async with fast_services(settings) as services:
        result = await export_batch(services, "archives", out)

    # Only the safe archive's members arrive; a hostile archive leaves not even its good member.
    assert tree(out) == {"outputs/a.txt": b"A", "outputs/sub/b.txt": b"B"}
    assert outside(tmp_path, out, state) == []
    assert not Path("/tmp/rfbatch-absolute-escape.txt").exists()
    failed = {(f.part_name, f.file_name): f.reason for f in result.failed}
    assert set(failed) == {("outputs", a.name) for a in archives} | {("../evil-part", None)}
    assert "'..' in path" in failed[("outputs", f"dotdot{ext}")]
    assert "absolute path" in failed[("outputs", f"absolute{ext}")]
    assert "symbolic link" in failed[("outputs", f"symlink{ext}")]
    assert "hard link" in failed[("outputs", f"hardlink{ext}")]
    assert "device" in failed[("outputs", f"device{ext}")]
    assert "part name refused" in failed[("../evil-part", None)]
    assert fake.served["x.bin"] == 0
    assert (result.unpacked, result.downloaded) == (2, 1)


async def test_multipart_parts_and_pages_land_in_part_folders(
    fake: FakeStaging, tmp_path: Path
) -> None:
    parts: dict[str | None, list[FakeFile]] = {
        f"part-{p}": [FakeFile(f"f-{i:02d}.bin", f"{p}:{i}".encode() * 50) for i in range(11)]
        for p in "abc"
    }
    fake.add("multi", FakeBatch("multipart-batch", parts))
    out = tmp_path / "out"
    settings = export_settings(fake.base_url, tmp_path / "state", page_size=3, workers=6)

    async with fast_services(settings) as services:
        everything = await export_batch(services, "multi", out)
        only_b = await export_batch(services, "multi", tmp_path / "only-b", parts=["part-b"])

    expected = {f"{p}/{f.name}": f.data for p, fs in parts.items() for f in fs}
    assert tree(out) == expected
    assert everything.complete
    assert everything.downloaded == 33
    assert tree(tmp_path / "only-b") == {
        k: v for k, v in expected.items() if k.startswith("part-b/")
    }
    assert only_b.downloaded == 11


async def test_a_corrupt_archive_is_fetched_once_more_then_recorded(
    fake: FakeStaging, tmp_path: Path
) -> None:
    garbage = bytes(range(256)) * 8
    fake.add(
        "corrupt",
        FakeBatch(
            "sharded-batch",
            {None: [FakeFile("broken.tar.gz", garbage), FakeFile("ok.tar", safe_tar({"m": b"M"}))]},
        ),
    )
    out = tmp_path / "out"
    settings = export_settings(fake.base_url, tmp_path / "state")

    async with fast_services(settings) as services:
        result = await export_batch(services, "corrupt", out)
        kept = await export_batch(services, "corrupt", tmp_path / "kept", unpack=False)

    assert fake.served["broken.tar.gz"] == 2 + 1  # two tries unpacking, one kept as it is
    assert [(f.file_name, "truncated or corrupt" in f.reason) for f in result.failed] == [
        ("broken.tar.gz", True)
    ]
    assert tree(out) == {"m": b"M"}
    assert kept.complete
    assert tree(tmp_path / "kept")["broken.tar.gz"] == garbage


async def test_temporary_files_of_a_killed_run_are_swept(fake: FakeStaging, tmp_path: Path) -> None:
    fake.add("sweep", FakeBatch("sharded-batch", {None: [FakeFile("a.bin", b"A")]}))
    out = tmp_path / "out"
    (out / ".rfbatch-extract-0123456789ab.rfbatch.tmp" / "x").mkdir(parents=True)
    (out / ".a.bin.0123456789ab.rfbatch.tmp").write_bytes(b"half")
    (out / ".keep-me").write_bytes(b"the user's")
    settings = export_settings(fake.base_url, tmp_path / "state")

    async with fast_services(settings) as services:
        result = await export_batch(services, "sweep", out)

    assert result.complete
    assert tree(out) == {"a.bin": b"A", ".keep-me": b"the user's"}
    assert sorted(p.name for p in out.iterdir()) == [".keep-me", "a.bin"]
