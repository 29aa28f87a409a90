"""Broken downloads: truncated bodies are fetched again, expired URLs are listed again."""

from __future__ import annotations

import re
from pathlib import Path

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.pipeline.export import ExportProgress, export_batch
from tests.export.support import (
    downloads,
    emulator_digests,
    export_settings,
    fast_services,
    images,
    stage_sharded,
    tree,
    tree_digests,
)


async def test_truncated_bodies_are_detected_and_fetched_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = images(24, size=40_000)
    out = tmp_path / "out"
    settings = export_settings(emulator.base_url, tmp_path / "state", page_size=5)

    async with fast_services(settings) as services:
        await stage_sharded(services, "trunc", files)
        emulator.set_faults(
            FaultProfile(routes={"download": FaultRates(truncate=0.3)}, seed=7, cut_fraction=0.4)
        )
        result = await export_batch(services, "trunc", out)
        retries = services.transfer.statistics().retries

    assert emulator.state()["counters"]["faultsInjected"] > 0
    assert retries.get("truncated", 0) > 0
    assert result.complete, result.failed
    # Every file whole and nothing half-written left behind (no temporary names either).
    assert tree(out) == files
    assert result.bytes == sum(len(d) for d in files.values())


async def test_expired_urls_are_replaced_from_a_fresh_listing(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = images(30)
    out = tmp_path / "out"
    # Pages are prefetched, so URLs listed before the expiry wait in the pool when it hits.
    settings = export_settings(
        emulator.base_url, tmp_path / "state", page_size=4, workers=2, prefetch_pages=4
    )
    expired: list[int] = []

    def expire_after_first_file(progress: ExportProgress) -> None:
        # On the first bytes received: files are recorded done a group at a time, so by the
        # first one recorded the whole pool may have been downloaded already.
        if progress.bytes_received > 0 and not expired:
            emulator.expire_urls()
            expired.append(progress.files_listed)

    async with fast_services(settings) as services:
        await stage_sharded(services, "exp", files)
        result = await export_batch(services, "exp", out, on_progress=expire_after_first_file)

    assert expired
    assert expired[0] > 1
    assert result.complete, result.failed
    assert result.refreshed > 0
    assert tree_digests(out) == emulator_digests(emulator, "exp")
    # A refused URL serves nothing: each file was downloaded exactly once.
    assert downloads(emulator) == len(files)


async def test_expire_fault_on_every_url_fails_the_file_after_bounded_refreshes(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = images(3)
    out = tmp_path / "out"
    settings = export_settings(emulator.base_url, tmp_path / "state")

    async with fast_services(settings) as services:
        await stage_sharded(services, "dead", files)
        emulator.set_faults(FaultProfile(routes={"download": FaultRates(expire=1.0)}))
        result = await export_batch(services, "dead", out)
        attempts = services.transfer.config.refresh_attempts
        rows = await services.manifest.list_downloads("dead")

    assert not result.complete
    assert sorted(f.file_name or "" for f in result.failed) == sorted(files)
    assert all("refused" in f.reason for f in result.failed)
    # The URL in the reason is redacted: no signature or expiry value survives.
    assert not any(re.search(r"(signature|expires)=(?!\*\*\*)", f.reason) for f in result.failed)
    assert result.refreshed == len(files) * attempts
    assert {r.state for r in rows} == {"failed"}
    assert tree(out) == {}
