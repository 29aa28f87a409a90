"""The ingest pipeline end to end against the in-process emulator (issue: ingest pipeline)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from rfbatch.app import open_services
from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.pipeline.upload_pass import (
    PassResult,
    UploadTarget,
    source_specs,
    upload_and_confirm,
)
from rfbatch.settings import Settings
from tests.e2e.support import (
    batch_items,
    make_tree,
    received_digests,
    settings_for,
    sha,
)

TARGET = UploadTarget(image_batch="imgs", video_batch="vids")


async def upload(settings: Settings, *roots: Path) -> PassResult:
    async with open_services(settings) as services:
        specs = source_specs(services, [str(r) for r in roots])
        return await upload_and_confirm(services, specs, TARGET)


async def test_folder_arrives_whole_and_a_second_run_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 1100)
    (src / "clips").mkdir()
    videos = {f"clips/v{i}.mp4": os.urandom(300_000 + i) for i in range(2)}
    for rel, data in videos.items():
        (src / rel).write_bytes(data)
    settings = settings_for(emulator, tmp_path / "state", upload={"shard_max_files": 200})

    first = await upload(settings, src)

    assert first.complete, first.tally.snapshot()
    assert first.tally.sent == 1102
    assert first.tally.shards >= 6  # 1100 images, at most 200 per shard
    digests = received_digests(emulator, "imgs")
    assert digests == {sha(d): 1 for d in files.values()}
    names = [item["name"] for item in batch_items(emulator, "imgs")]
    assert len(names) == len(set(names)) == 1100  # repeated basenames got distinct names
    assert received_digests(emulator, "vids") == {sha(d): 1 for d in videos.values()}
    assert emulator.state()["batches"]["imgs"]["count"] == 1100

    second = await upload(settings, src)

    assert second.tally.sent == 0
    assert second.tally.unchanged == 1102
    assert second.complete
    assert received_digests(emulator, "imgs") == digests


async def test_changed_file_is_sent_again_unchanged_ones_are_not(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 40)
    settings = settings_for(emulator, tmp_path / "state")
    await upload(settings, src)
    changed = src / next(iter(files))
    changed.write_bytes(b"\x89PNG changed content")
    os.utime(changed, ns=(1, 1_700_000_000_000_000_000))

    again = await upload(settings, src)

    assert again.tally.sent == 1
    assert again.tally.unchanged == 39
    assert sha(changed.read_bytes()) in received_digests(emulator, "imgs")


async def test_every_file_arrives_through_five_percent_faults(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 600)
    rates = FaultRates(status_429=0.01, status_503=0.01, reset=0.01, slow=0.01)
    # A 500 is sent again by storage transfers only (the API, as the official client, does not).
    routes = {"*": rates, "put": FaultRates(status_500=0.02)}
    emulator.set_faults(FaultProfile(routes=routes, seed=5, retry_after=0, slow_seconds=0.05))
    settings = settings_for(
        emulator, tmp_path / "state", upload={"shard_max_files": 50, "shard_workers": 3}
    )

    result = await upload(settings, src)

    emulator.set_faults(None)
    assert result.complete, result.tally.snapshot()
    assert emulator.state()["counters"]["faultsInjected"] > 0
    assert set(received_digests(emulator, "imgs")) == {sha(d) for d in files.values()}


async def test_expired_signed_urls_are_refreshed(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 100)
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(expire=0.5)}, seed=3))
    # One PUT at a time: the emulator draws its faults from one seeded sequence in the order
    # requests arrive, so only a fixed order makes the draws (and the test) the same every run.
    # Concurrent, a shard could meet four expiries in a row and use up its refreshes.
    one_at_a_time = {"shard_max_files": 10, "shard_workers": 1, "adaptive_concurrency": False}
    settings = settings_for(emulator, tmp_path / "state", upload=one_at_a_time)

    result = await upload(settings, src)

    assert result.complete, result.tally.snapshot()
    assert emulator.state()["counters"]["putsRejected"] > 0
    assert set(received_digests(emulator, "imgs")) == {sha(d) for d in files.values()}


async def test_bad_files_are_skipped_with_a_reason_and_the_rest_continue(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 30)
    (src / "empty.png").write_bytes(b"")
    (src / "huge.jpg").write_bytes(b"\xff" * 5000)
    (src / "dangling.png").symlink_to(src / "nowhere.png")
    settings = settings_for(
        emulator,
        tmp_path / "state",
        upload={"max_image_bytes": 4096},
        scan={"follow_symlinks": True},
    )

    result = await upload(settings, src)

    reasons = {Path(f.path).name: f.reason for f in result.tally.skipped}
    assert "empty" in reasons["empty.png"]
    assert "limit" in reasons["huge.jpg"]
    assert "dangling.png" in reasons
    assert not result.tally.failed
    assert set(received_digests(emulator, "imgs")) == {sha(d) for d in files.values()}
    assert not result.complete  # skipped files make the run incomplete (exit code 1)


async def test_source_folder_is_left_untouched(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 20)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    for path in [src, *src.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = await upload(settings_for(emulator, tmp_path / "state"), src)
    finally:
        for path in [src, *src.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.complete
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


async def test_a_file_still_being_written_waits_until_it_is_quiet(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "growing.png"
    growing.write_bytes(b"\x89PNG" + b"a" * 1000)
    settings = settings_for(emulator, tmp_path / "state", scan={"settle_seconds": 2.0})
    writes = 0

    async def keep_writing() -> None:
        nonlocal writes
        # Append for a while; the file is not quiet until this stops.
        for _ in range(8):
            with growing.open("ab") as fh:
                fh.write(b"b" * 1000)
            writes += 1
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_writing)
        result = await upload(settings, src)

    assert writes == 8
    assert result.complete
    # What arrived is the final content, not a prefix of it.
    assert received_digests(emulator, "imgs") == {sha(growing.read_bytes()): 1}


async def test_the_same_folder_sent_to_another_batch_is_sent_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 30)
    settings = settings_for(emulator, tmp_path / "state")
    await upload(settings, src)

    async with open_services(settings) as services:
        other = UploadTarget(image_batch="other", video_batch="other-v")
        result = await upload_and_confirm(services, source_specs(services, [str(src)]), other)

    assert result.tally.sent == 30
    assert set(received_digests(emulator, "other")) == {sha(d) for d in files.values()}
    assert received_digests(emulator, "imgs") == {sha(d): 1 for d in files.values()}
