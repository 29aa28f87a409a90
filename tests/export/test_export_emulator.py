"""Exports against the in-process emulator: layout, pages, job outputs, resume and --force."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator
from rfbatch.errors import ConfigError, NotFoundError
from rfbatch.pipeline.export import ExportProgress, export_batch, export_batches
from tests.export.support import (
    downloads,
    emulator_digests,
    export_settings,
    fast_services,
    images,
    run_job,
    sha,
    stage_sharded,
    tree,
    tree_digests,
)


async def test_sharded_batch_over_many_pages_is_byte_identical_and_resumes(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = images(40)
    out = tmp_path / "out"
    settings = export_settings(emulator.base_url, tmp_path / "state", page_size=3, workers=5)
    seen: list[ExportProgress] = []

    async with fast_services(settings) as services:
        await stage_sharded(services, "inputs", files)
        first = await export_batch(services, "inputs", out, on_progress=seen.append)
        rows = await services.manifest.list_downloads("inputs")

    assert first.complete, first.failed
    assert (first.downloaded, first.skipped) == (40, 0)
    assert first.bytes == sum(len(d) for d in files.values())
    # <output>/<fileName> for a batch without parts, byte for byte, and nothing else.
    assert tree(out) == files
    assert tree_digests(out) == emulator_digests(emulator, "inputs")
    assert downloads(emulator) == 40
    assert {r.file_name for r in rows} == set(files)
    assert {r.state for r in rows} == {"done"}
    assert all(r.path == out / r.file_name and r.size == len(files[r.file_name]) for r in rows)
    final = seen[-1]
    assert (final.files_listed, final.files_downloaded, final.listing_done) == (40, 40, True)
    assert final.bytes_received == first.bytes

    async with fast_services(settings) as services:
        again = await export_batch(services, "inputs", out)

    assert again.complete
    assert (again.downloaded, again.skipped) == (0, 40)
    assert downloads(emulator) == 40

    # A file that went missing, or whose size no longer matches, is fetched again; only it.
    (out / "img-0003.png").unlink()
    (out / "img-0007.png").write_bytes(b"damaged")
    async with fast_services(settings) as services:
        repaired = await export_batch(services, "inputs", out)

    assert (repaired.downloaded, repaired.skipped) == (2, 38)
    assert downloads(emulator) == 42
    assert tree(out) == files

    async with fast_services(settings) as services:
        forced = await export_batch(services, "inputs", out, force=True)

    assert (forced.downloaded, forced.skipped) == (40, 0)
    assert downloads(emulator) == 82
    assert tree(out) == files


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_job_outputs_processing_and_unpacked_export(
    emulator: Emulator, tmp_path: Path, fmt: str
) -> None:
    # 450 inputs make five processing tasks, hence five results files and five archives,
    # listed one per page.
    files = images(450, size=300)
    settings = export_settings(emulator.base_url, tmp_path / "state", page_size=1)
    out = tmp_path / "results"

    async with fast_services(settings) as services:
        await stage_sharded(services, "job-in", files)
        await run_job(services, "job1", "job-in", fmt=fmt)  # type: ignore[arg-type]
        results = await export_batches(services, ["job1-processing", "job1-export"], out)

    assert [r.batch_id for r in results] == ["job1-processing", "job1-export"]
    assert all(r.complete for r in results), [r.failed for r in results]
    processing, exported = results
    names = [f"results-{i:04d}.{fmt}" for i in range(5)]
    # <output>/<batch>/<partName>/<fileName>, identical to what the emulator serves.
    proc = tree(out / "job1-processing")
    assert sorted(proc) == [f"results/{n}" for n in names]
    assert {k: sha(v) for k, v in proc.items()} == emulator_digests(emulator, "job1-processing")
    # The .tar.gz parts are unpacked in place of the archive, which is not kept.
    assert tree(out / "job1-export") == proc
    assert (exported.downloaded, exported.unpacked) == (5, 5)
    assert processing.unpacked == 0
    # The results name every input with its digest.
    rows: list[dict[str, str]] = []
    for data in proc.values():
        text = data.decode()
        if fmt == "csv":
            rows.extend(csv.DictReader(io.StringIO(text)))
        else:
            rows.extend(json.loads(line) for line in text.splitlines())
    assert {r["file_name"]: r["sha256"] for r in rows} == {n: sha(d) for n, d in files.items()}

    async with fast_services(settings) as services:
        again = await export_batches(services, ["job1-processing", "job1-export"], out)

    assert [(r.downloaded, r.skipped) for r in again] == [(0, 5), (0, 5)]


async def test_no_unpack_keeps_archives_and_parts_can_be_chosen(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = export_settings(emulator.base_url, tmp_path / "state")
    out = tmp_path / "raw"

    async with fast_services(settings) as services:
        await stage_sharded(services, "in2", images(5))
        await run_job(services, "job2", "in2")
        result = await export_batch(services, "job2-export", out, parts=["results"], unpack=False)

        assert result.complete
        assert tree_digests(out) == emulator_digests(emulator, "job2-export")
        assert list(tree(out)) == ["results/results-0000.jsonl.tar.gz"]

        with pytest.raises(ConfigError, match="has no part 'nope'"):
            await export_batch(services, "job2-export", out, parts=["nope"])
        with pytest.raises(ConfigError, match="sharded-batch: it has no parts"):
            await export_batch(services, "in2", out, parts=["results"])
        with pytest.raises(ConfigError, match="invalid batch id"):
            await export_batch(services, "Not A Batch", out)
        with pytest.raises(NotFoundError):
            await export_batch(services, "missing-batch", tmp_path / "missing")
        assert not (tmp_path / "missing").exists()
