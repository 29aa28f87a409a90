"""The group commit that puts downloaded files in place: every file lands and is recorded once."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from rfbatch.api.schemas import FileMetadata
from rfbatch.errors import IncompleteBodyError, ManifestClosedError
from rfbatch.localfs.atomic import atomic_target
from rfbatch.pipeline.download import Placer, Planned, is_present
from rfbatch.state.manifest import SqliteManifest


def planned(out: Path, name: str) -> Planned:
    meta = FileMetadata.model_validate(
        {"downloadURL": f"http://127.0.0.1:1/{name}", "file_name": name, "content_type": "x"}
    )
    return Planned(part_name="part-1", meta=meta, dest=out / name, unpack_into=None)


def written(item: Planned, data: bytes) -> Path:
    """What Transfer.download leaves behind: the body in a temporary name beside the file."""
    tmp = atomic_target(item.dest)
    tmp.write_bytes(data)
    return tmp


async def test_files_finishing_together_all_land_and_are_recorded_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    names = [f"r{i:02}.json" for i in range(12)] + [f"sub/s{i}.json" for i in range(12)]
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = Placer(manifest, "out-1")
        items = [planned(out, name) for name in names]
        temps = [written(item, name.encode() * 3) for item, name in zip(items, names, strict=True)]

        async with anyio.create_task_group() as tg:
            for item, tmp in zip(items, temps, strict=True):
                tg.start_soon(placer.place, item, tmp, tmp.stat().st_size)

        rows = {row.file_name: row for row in await manifest.list_downloads("out-1")}

    for item, name in zip(items, names, strict=True):
        assert item.dest.read_bytes() == name.encode() * 3
        assert rows[name].state == "done"
        assert rows[name].path == item.dest
        assert rows[name].size == len(name) * 3
        assert is_present(item, rows[name])
    # No temporary file is left anywhere.
    assert sorted(p.name for p in out.rglob(".*")) == []


async def test_a_short_file_fails_alone_and_the_others_land(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with await SqliteManifest.open(tmp_path / "state") as manifest:
        placer = Placer(manifest, "out-1")
        good = [planned(out, f"g{i}.json") for i in range(5)]
        bad = planned(out, "bad.json")
        errors: list[BaseException] = []

        async def place(item: Planned, data: bytes, claimed: int) -> None:
            tmp = written(item, data)
            try:
                await placer.place(item, tmp, claimed)
            except IncompleteBodyError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for item in good:
                tg.start_soon(place, item, b"{}", 2)
            tg.start_soon(place, bad, b"{", 2)

        rows = {row.file_name: row for row in await manifest.list_downloads("out-1")}

    assert [str(e) for e in errors] == ["bad.json: wrote 1 bytes, expected 2"]
    assert not bad.dest.exists()
    assert rows["bad.json"].state == "pending"  # the caller records it failed
    assert not is_present(bad, rows["bad.json"])
    for item in good:
        assert item.dest.read_bytes() == b"{}"
        assert rows[item.file_name].state == "done"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


async def test_a_manifest_that_cannot_record_fails_every_file_and_moves_none(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    manifest = await SqliteManifest.open(tmp_path / "state")
    placer = Placer(manifest, "out-1")
    await manifest.close()
    item = planned(out, "a.json")
    tmp = written(item, b"{}")

    with pytest.raises(ManifestClosedError, match="the manifest is closed"):
        await placer.place(item, tmp, 2)

    # Never renamed unrecorded: the temporary file is still there for the caller to remove.
    assert not item.dest.exists()
    assert tmp.exists()
    os.unlink(tmp)
