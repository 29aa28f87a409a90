"""``rfbatch run`` in a subprocess against the in-process emulator (issue: the daemon)."""

from __future__ import annotations

import json
import os
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from rfbatch.emulator import Emulator, EmulatorConfig, FaultProfile, FaultRates, running_emulator
from tests.conftest import API_KEY
from tests.daemon.support import DaemonProcess, daemon, write_config
from tests.e2e.support import cli_env, make_tree, received_digests, run_cli, sha
from tests.waiting import wait_for


def all_digests(emulator: Emulator) -> dict[str, int]:
    out: dict[str, int] = {}
    for batch_id in emulator.state()["batches"]:
        for digest, n in received_digests(emulator, batch_id).items():
            out[digest] = out.get(digest, 0) + n
    return out


def image_batches(emulator: Emulator) -> dict[str, int]:
    return {
        b: v["count"]
        for b, v in emulator.state()["batches"].items()
        if b.startswith("rfbatch-") and "-img-" in b
    }


async def test_files_dropped_over_time_arrive_and_metrics_match(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml", emulator, tmp_path, scan={"rescan_interval_seconds": 0.5}
    )
    sent: dict[str, bytes] = {}
    async with daemon(config, emulator, tmp_path / "state") as d:
        assert d.get("/healthz")[0] == 200
        for wave in range(3):
            files = make_tree(tmp_path / "src" / f"wave{wave}", 25, seed=wave)
            sent.update({f"wave{wave}/{rel}": data for rel, data in files.items()})
            await wait_for(
                lambda: set(all_digests(emulator)) >= {sha(v) for v in sent.values()},
                "set(all_digests(emulator)) >= {sha(v) for v in sent.values()}",
            )
        status, body = await d.fetch("/readyz")
        assert status == 200, body
        assert await d.metric('rfbatch_files_total{outcome="uploaded"}') == 75
        # Files that cannot be sent, met again by every rescan: each counted and logged once.
        (tmp_path / "src" / "empty.png").write_bytes(b"")
        (tmp_path / "src" / "link.png").symlink_to(tmp_path / "src" / "wave0")
        rescans = len(d.saw("watch.rescan"))
        await wait_for(lambda: len(d.saw("watch.rescan")) >= rescans + 3, "three rescans")
        assert await d.metric('rfbatch_files_total{outcome="discovered"}') == 76
        assert await d.metric('rfbatch_files_total{outcome="skipped"}') == 2
        skipped = sorted(Path(e["path"]).name for e in d.saw("upload.skipped"))
        assert skipped == ["empty.png", "link.png"]
        assert await d.metric("rfbatch_bytes_uploaded_total") >= sum(map(len, sent.values()))
        # PUTs start at 6 and may probe upward, never past 16 shards + 8 videos; downloads
        # have not started.
        assert 6 <= await d.metric('rfbatch_transfer_concurrency{direction="put"}') <= 24
        assert await d.metric('rfbatch_transfer_concurrency{direction="download"}') == 8
        assert await d.terminate() == 0
    assert all_digests(emulator) == {sha(v): 1 for v in sent.values()}
    assert API_KEY not in "\n".join(d.raw)
    assert d.saw("daemon.stopped")


async def test_batches_rotate_by_count(emulator: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", emulator, tmp_path, daemon={"batch_max_items": 40})
    async with daemon(config, emulator, tmp_path / "state") as d:
        make_tree(tmp_path / "src", 100)
        await wait_for(
            lambda: sum(image_batches(emulator).values()) == 100,
            "sum(image_batches(emulator).values()) == 100",
        )
        assert await d.terminate() == 0
    counts = sorted(image_batches(emulator).values())
    assert counts == [20, 40, 40]


async def test_batches_rotate_by_time(emulator: Emulator, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml", emulator, tmp_path, daemon={"batch_window_seconds": 2.0}
    )
    async with daemon(config, emulator, tmp_path / "state") as d:
        make_tree(tmp_path / "src" / "first", 10, seed=1)
        await wait_for(
            lambda: sum(image_batches(emulator).values()) == 10,
            "sum(image_batches(emulator).values()) == 10",
        )
        # Wait for the first window to be sealed, then drop more files.
        await wait_for(lambda: bool(d.saw("batch.sealed")), 'bool(d.saw("batch.sealed"))')
        make_tree(tmp_path / "src" / "second", 10, seed=2)
        await wait_for(
            lambda: sum(image_batches(emulator).values()) == 20,
            "sum(image_batches(emulator).values()) == 20",
        )
        assert await d.terminate() == 0
    assert len(image_batches(emulator)) >= 2


async def test_sigterm_mid_upload_then_restart_loses_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        emulator,
        tmp_path,
        upload={"shard_max_files": 50, "shard_workers": 2},
        daemon={"shutdown_grace_seconds": 0.5},
    )
    files = make_tree(tmp_path / "src", 1000)
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(slow=1.0)}, slow_seconds=0.3))
    async with daemon(config, emulator, tmp_path / "state") as d:
        await wait_for(
            lambda: len(all_digests(emulator)) >= 100, "len(all_digests(emulator)) >= 100"
        )
        assert await d.terminate() == 0
    assert len(all_digests(emulator)) < 1000, "finished before the signal"
    emulator.set_faults(None)
    async with daemon(config, emulator, tmp_path / "state") as d:
        await wait_for(
            lambda: set(all_digests(emulator)) == {sha(v) for v in files.values()},
            "set(all_digests(emulator)) == {sha(v) for v in files.values()}",
        )
        assert await d.terminate() == 0
    twice = sum(1 for n in all_digests(emulator).values() if n > 1)
    assert twice <= 2 * 50  # at most the shards in flight when the grace ran out


async def test_full_loop_exports_job_results(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "c.toml",
        emulator,
        tmp_path,
        job={"workflow_id": "wf", "poll_seconds": 0.1},
        daemon={"output_dir": str(out), "batch_window_seconds": 1.0},
    )
    async with daemon(config, emulator, tmp_path / "state") as d:
        make_tree(tmp_path / "src", 30)
        await wait_for(
            lambda: bool(d.saw("batch.exported")), 'bool(d.saw("batch.exported"))', timeout=120
        )
        assert await d.terminate() == 0
    exported = d.saw("batch.exported")[0]
    results = list(Path(exported["output"]).rglob("*.jsonl"))
    assert results
    names = {json.loads(line)["file_name"] for r in results for line in r.read_text().splitlines()}
    assert len(names) == 30


async def status_of(d: DaemonProcess, path: str) -> int:
    return (await d.fetch(path))[0]


async def wait_status(d: DaemonProcess, path: str, status: int) -> None:
    async def answers() -> bool:
        return await status_of(d, path) == status

    await wait_for(answers, f"{path} to answer {status}", interval=0.1)


async def test_readyz_follows_the_api(tmp_path: Path) -> None:
    emu_config = EmulatorConfig(api_key=API_KEY, state_dir=tmp_path / "emu")
    async with AsyncExitStack() as first:
        emu = await first.enter_async_context(running_emulator(emu_config))
        port = int(emu.base_url.rsplit(":", 1)[1])
        config = write_config(tmp_path / "c.toml", emu, tmp_path)
        async with daemon(config, emu, tmp_path / "state") as d:
            await wait_status(d, "/readyz", 200)
            await first.aclose()  # the API goes away
            await wait_status(d, "/readyz", 503)
            assert '"api"' in (await d.fetch("/readyz"))[1]
            assert await status_of(d, "/healthz") == 200  # alive, just not ready
            async with running_emulator(replace(emu_config, port=port)):
                await wait_status(d, "/readyz", 200)
                assert await d.terminate() == 0


async def test_low_disk_pauses_intake(emulator: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", emulator, tmp_path, daemon={"min_free_bytes": 2**62})
    async with daemon(config, emulator, tmp_path / "state") as d:
        make_tree(tmp_path / "src", 10)
        await wait_for(lambda: bool(d.saw("intake.paused")), 'bool(d.saw("intake.paused"))')
        assert await d.metric("rfbatch_intake_paused") == 1.0
        assert await status_of(d, "/readyz") == 503
        assert not all_digests(emulator)
        assert await d.terminate() == 0


async def test_invalid_config_stops_the_start_with_one_clear_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml", emulator, tmp_path, daemon={"batch_prefix": "Bad Prefix"}
    )
    done = await run_cli(["run", "-c", str(config)], cli_env(emulator, tmp_path / "state"))
    assert done.returncode == 2
    err = done.stderr.decode().strip()
    assert "daemon.batch_prefix" in err
    assert len(err.splitlines()) == 1
    checked = await run_cli(["config", "check", "-c", str(config)], {"PATH": "/usr/bin"})
    assert checked.returncode == 2


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_sources_are_moved_once_their_ingest_is_confirmed(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    config = write_config(
        tmp_path / "c.toml",
        emulator,
        tmp_path,
        daemon={"after_ingest": "move", "move_to": str(done), "batch_window_seconds": 1.0},
    )
    async with daemon(config, emulator, tmp_path / "state") as d:
        files = make_tree(tmp_path / "src", 12)
        await wait_for(
            lambda: d.saw("source.cleanup") and not files_under(tmp_path / "src"),
            'd.saw("source.cleanup") and not files_under(tmp_path / "src")',
        )
        assert await d.terminate() == 0
    # Moved only after the service held every file, each to its place under the source.
    assert set(all_digests(emulator)) == {sha(v) for v in files.values()}
    assert files_under(done) == files
    assert sum(e["files"] for e in d.saw("source.cleanup")) == 12


async def test_files_that_failed_in_an_outage_are_sent_once_it_is_over(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Quick rescans pass over folders that did not change; full ones are an hour apart here.
    config = write_config(
        tmp_path / "c.toml",
        emulator,
        tmp_path,
        api={"retry_attempts": 2, "retry_timeout": 1.0},
        scan={"rescan_interval_seconds": 0.5, "full_rescan_interval_seconds": 3600.0},
    )
    files = make_tree(tmp_path / "src", 10)
    for folder in [tmp_path / "src", *(tmp_path / "src").rglob("*")]:
        if folder.is_dir():  # an old mtime: quick rescans trust it and list nothing
            os.utime(folder, (time.time() - 3600,) * 2)
    emulator.set_faults(FaultProfile(routes={"put": FaultRates(status_503=1.0)}))
    async with daemon(config, emulator, tmp_path / "state") as d:
        await wait_for(lambda: bool(d.saw("upload.failed")), "the uploads to fail")
        emulator.set_faults(None)
        await wait_for(
            lambda: set(all_digests(emulator)) == {sha(v) for v in files.values()},
            "every file, once the outage is over",
        )
        assert await d.terminate() == 0
    assert all_digests(emulator) == {sha(v): 1 for v in files.values()}
