"""The crash matrix: ``rfbatch sync`` and ``rfbatch run`` are SIGKILLed at points spread over the
whole loop, then started again.

A point is reached by watching the process's JSON log events, its manifest (read from outside:
WAL lets a reader in) and the emulator's state, with slow faults or slow clocks holding the
window open. After the kill the test checks where it landed (so a point that drifted is noticed,
not silently tested elsewhere) and that the output holds only whole results; after the restart,
that the run completes, nothing is lost, no temporary name is left, every result is byte for
byte what was served, and the copies received twice are no more than the files the manifest
had in flight (packed or uploading) when the process died.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from tests.daemon.support import daemon, write_config
from tests.e2e.support import run_cli
from tests.reliability.support_a import (
    IMAGE_BATCH,
    VIDEO_BATCH,
    ManifestView,
    Sources,
    Watched,
    check_delivered,
    check_partial_output,
    check_results,
    cli_env_for,
    emulator_at,
    expected_results,
    files_under,
    make_sources,
    read_manifest,
    sync_args,
    temporary_leftovers,
    watched,
)
from tests.waiting import wait_for

IMAGES = 300
VIDEOS = 3
PUTS = IMAGES // 50 + VIDEOS  # shards of 50 images, one PUT per video
IMAGE_JOB = "j-rel-images"
TRIGGER_TIMEOUT = 60.0


@dataclass
class Probe:
    """What a trigger can look at: the process's log, its manifest, the emulator."""

    proc: Watched
    emulator: dict[str, Any] = field(default_factory=dict)
    manifest: ManifestView = field(default_factory=lambda: ManifestView({}, 0, {}))
    temps: list[Path] = field(default_factory=list)
    """Temporary names in the output folder (read after the kill)."""

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.emulator["counters"])

    def items(self, batch: str) -> int:
        return int(self.emulator["batches"].get(batch, {"count": 0})["count"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.emulator["jobs"].get(job_id, {}))


@dataclass(frozen=True)
class CrashPoint:
    name: str
    trigger: Callable[[Probe], bool]
    landed: Callable[[Probe], bool]
    """Checked on the state right after the kill: the kill happened where it was meant to."""
    faults: FaultProfile | None = None
    job_tick: float = 0.01
    ingest_delay: float = 0.0
    env: Mapping[str, str] = field(default_factory=dict)


def _slow(*routes: str, seconds: float) -> FaultProfile:
    return FaultProfile(routes={r: FaultRates(slow=1.0) for r in routes}, slow_seconds=seconds)


def _downloads_left(p: Probe) -> int:
    return sum(p.manifest.downloads.values()) - p.manifest.downloads.get("done", 0)


def _some_downloads_done(p: Probe) -> bool:
    done = p.manifest.downloads.get("done", 0)
    return done >= 1 and sum(p.manifest.downloads.values()) > done


POINTS = [
    CrashPoint(
        "discovery: files recorded, settling, nothing packed",
        trigger=lambda p: p.manifest.total_files > 0,
        landed=lambda p: p.manifest.shards == 0 and p.counters["puts"] == 0,
        env={"RFBATCH_SCAN__SETTLE_SECONDS": "3"},
    ),
    CrashPoint(
        "packing: shards recorded and marked uploading, URLs not minted yet",
        trigger=lambda p: p.manifest.shards > 0,
        landed=lambda p: p.manifest.in_flight > 0 and p.counters["puts"] == 0,
        # The video URL too: a video PUT inside the window would miss "no PUT yet".
        faults=_slow("shard_url", "video_url", seconds=3.0),
    ),
    CrashPoint(
        "upload: some shards stored, others mid-PUT",
        # The second round of PUTs: the first is recorded, the next one has a second to go.
        trigger=lambda p: p.manifest.files.get("uploaded", 0) > 0 and p.manifest.in_flight > 0,
        landed=lambda p: p.manifest.in_flight > 0 and p.counters["puts"] < PUTS,
        faults=_slow("put", seconds=1.0),
    ),
    CrashPoint(
        "upload: videos partly stored",
        trigger=lambda p: p.items(VIDEO_BATCH) >= 1,
        landed=lambda p: 1 <= p.items(VIDEO_BATCH) < VIDEOS,
        faults=_slow("put", seconds=1.0),
    ),
    CrashPoint(
        "ingest wait: every PUT stored, the service still indexing",
        # Stored by the emulator and recorded by rfbatch: the last PUT's answer may still be on
        # its way back when the emulator already counts it.
        trigger=lambda p: p.counters["puts"] >= PUTS and p.manifest.in_flight == 0,
        landed=lambda p: p.manifest.in_flight == 0 and p.items(IMAGE_BATCH) == 0,
        ingest_delay=3.0,
    ),
    CrashPoint(
        "job start: the start request in flight",
        trigger=lambda p: p.counters["faultsInjected"] >= 1,
        landed=lambda p: not p.emulator["jobs"],
        faults=_slow("jobs_start", seconds=3.0),
    ),
    CrashPoint(
        "job wait: processing stage",
        trigger=lambda p: bool(p.proc.saw("job.started", batch=IMAGE_BATCH)),
        landed=lambda p: p.job(IMAGE_JOB).get("state") == "running",
        job_tick=0.3,
    ),
    CrashPoint(
        "job wait: export stage",
        trigger=lambda p: p.job(IMAGE_JOB).get("currentStage") == "export",
        landed=lambda p: p.job(IMAGE_JOB).get("state") == "running",
        job_tick=0.3,
    ),
    CrashPoint(
        "after the job, before the first download",
        trigger=lambda p: bool(p.proc.saw("job.done", job=IMAGE_JOB)),
        landed=lambda p: p.counters["downloads"] == 0,
        faults=_slow("batch", seconds=3.0),
    ),
    CrashPoint(
        "download: some results in place, others still arriving",
        # Some recorded done, others not: their bodies are on the way, in memory (small ones,
        # placed a group at a time) or in temporary files (over one write chunk, 16 KiB here),
        # which the next run must sweep away. Every result takes seconds at 4 KiB/s, so the
        # state lasts; a temporary file alone does not (a group's lives for milliseconds).
        trigger=_some_downloads_done,
        landed=_some_downloads_done,
        env={
            "RFBATCH_EXPORT__BYTES_PER_SECOND": "4096",
            "RFBATCH_EXPORT__WORKERS": "2",
            "RFBATCH_EXPORT__WRITE_CHUNK_BYTES": "16384",
        },
    ),
    CrashPoint(
        "download: one output batch exported, the next one under way",
        trigger=lambda p: bool(p.proc.saw("export.batch")),
        landed=lambda p: len(p.proc.saw("export.batch")) < 4,
        faults=_slow("download", seconds=0.5),
        env={"RFBATCH_EXPORT__WORKERS": "2"},
    ),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return make_sources(tmp_path_factory.mktemp("crash-sources"), IMAGES, VIDEOS, seed=5)


async def _kill_at(
    point: CrashPoint,
    emulator: Emulator,
    args: list[str],
    env: Mapping[str, str],
    state_dir: Path,
    output: Path,
) -> Probe:
    """Run until ``point`` triggers, SIGKILL, and return what things looked like after."""
    async with watched(args, env) as proc:
        probe = Probe(proc)

        async def triggered() -> bool:
            probe.emulator = emulator.state()
            probe.manifest = await read_manifest(state_dir)
            probe.temps = temporary_leftovers(output)
            if point.trigger(probe):
                return True
            assert proc.process.returncode is None, (
                f"the run ended before the crash point: {proc.events[-5:]}"
            )
            return False

        await wait_for(triggered, "the crash point", timeout=TRIGGER_TIMEOUT, interval=0.01)
        status = await proc.kill()
    assert status == -signal.SIGKILL, f"exit status {status}: the run ended on its own first"
    probe.emulator = emulator.state()
    probe.manifest = await read_manifest(state_dir)
    probe.temps = temporary_leftovers(output)
    return probe


async def _finish(
    emulator: Emulator, sources: Sources, output: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    done = await run_cli(sync_args(sources, output, "--json"), env)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    assert summary["complete"] is True
    return summary


@pytest.mark.parametrize(
    "point", POINTS, ids=[p.name.split(":")[0] + f"-{i}" for i, p in enumerate(POINTS)]
)
async def test_sync_killed_then_rerun_completes(
    point: CrashPoint, sources: Sources, tmp_path: Path
) -> None:
    emulator_dir, state_dir, output = tmp_path / "emulator", tmp_path / "state", tmp_path / "out"
    async with emulator_at(
        emulator_dir, point.faults, job_tick=point.job_tick, ingest_delay=point.ingest_delay
    ) as emulator:
        base_env = cli_env_for(emulator, state_dir)
        args = sync_args(sources, output)
        after = await _kill_at(point, emulator, args, {**base_env, **point.env}, state_dir, output)
        assert point.landed(after), (
            f"the kill missed '{point.name}': manifest {after.manifest}, "
            f"emulator {after.counters}, log {[e.get('event') for e in after.proc.events][-8:]}"
        )
        in_flight = after.manifest.in_flight
        check_partial_output(after.emulator, emulator_dir, output, [IMAGE_BATCH, VIDEO_BATCH])

        emulator.set_faults(None)
        await _finish(emulator, sources, output, base_env)
        state = emulator.state()

    delivery = check_delivered(state, sources)
    check_results(state, emulator_dir, output)
    assert delivery.extra_receipts <= in_flight, (point.name, delivery, in_flight)
    print(
        f"crash point '{point.name}': {in_flight} files in flight, "
        f"{delivery.extra_receipts} received twice, {len(after.temps)} temporary files swept"
    )


async def test_sync_killed_twice_in_a_row_still_completes(sources: Sources, tmp_path: Path) -> None:
    """Killed mid-upload, then the rerun killed mid-download: the third run completes."""
    emulator_dir, state_dir, output = tmp_path / "emulator", tmp_path / "state", tmp_path / "out"
    async with emulator_at(emulator_dir, _slow("put", seconds=1.0)) as emulator:
        env = cli_env_for(emulator, state_dir)
        args = sync_args(sources, output)
        first = await _kill_at(POINTS[2], emulator, args, env, state_dir, output)
        assert POINTS[2].landed(first)
        emulator.set_faults(None)
        slow_down = {**env, **POINTS[9].env}
        second = await _kill_at(POINTS[9], emulator, args, slow_down, state_dir, output)
        assert POINTS[9].landed(second)
        check_partial_output(second.emulator, emulator_dir, output, [IMAGE_BATCH, VIDEO_BATCH])
        emulator.set_faults(None)
        summary = await _finish(emulator, sources, output, env)
        state = emulator.state()

    # The downloads finished before the second kill were not fetched again.
    assert (
        sum(e["files_skipped"] for e in summary["export"]["batches"])
        >= second.manifest.downloads["done"]
    )
    delivery = check_delivered(state, sources)
    check_results(state, emulator_dir, output)
    assert delivery.extra_receipts <= first.manifest.in_flight + second.manifest.in_flight


# --- the daemon -----------------------------------------------------------------------------------

DAEMON_PREFIX = "rfbatch-"


@dataclass(frozen=True)
class DaemonPoint:
    name: str
    trigger: Callable[[Probe], bool]
    landed: Callable[[Probe], bool]
    faults: FaultProfile | None = None
    job_tick: float = 0.01
    export: Mapping[str, Any] = field(default_factory=dict)


DAEMON_POINTS = [
    DaemonPoint(
        "upload: files arriving, shards mid-PUT",
        trigger=lambda p: p.manifest.files.get("uploaded", 0) > 0 and p.manifest.in_flight > 0,
        landed=lambda p: p.manifest.in_flight > 0,
        faults=_slow("put", seconds=1.0),
    ),
    DaemonPoint(
        "job wait: a batch's job running",
        trigger=lambda p: bool(p.proc.saw("job.started")),
        landed=lambda p: any(j["state"] == "running" for j in p.emulator["jobs"].values()),
        job_tick=0.3,
    ),
    DaemonPoint(
        "export: results mid-download",
        # Throttled to 4 KiB/s, two downloads are in flight at almost any moment (a result no
        # larger than one write chunk reaches its temporary file only once it is whole). What
        # must hold after the kill is that the export was cut midway: some results done, some
        # not.
        # The kill lands a moment after the trigger is seen, time enough on a loaded machine
        # for one more small result to finish: trigger with two still to go.
        trigger=lambda p: _some_downloads_done(p) and _downloads_left(p) >= 2,
        landed=_some_downloads_done,
        export={"bytes_per_second": 4096, "workers": 2},
    ),
]


def input_batches(state: Mapping[str, Any], kind: str) -> list[str]:
    return sorted(b for b in state["batches"] if b.startswith(DAEMON_PREFIX) and f"-{kind}-" in b)


def results_ready(
    state: Mapping[str, Any], emulator_dir: Path, output: Path, sources: Sources
) -> bool:
    """Every source is in the emulator, and every input batch the daemon made has its job's
    results, whole, in the output."""
    batches = input_batches(state, "img") + input_batches(state, "vid")
    held = {i["sha256"] for b in batches for i in state["batches"][b]["items"]}
    if not held >= sources.image_digests | set(sources.video_digests):
        return False
    on_disk = files_under(output)
    for batch in batches:
        wanted = expected_results(state, emulator_dir, batch)
        if not wanted or any(on_disk.get(rel) != digest for rel, digest in wanted.items()):
            return False
    return True


def _under(folder: str, files: Mapping[str, bytes]) -> dict[str, bytes]:
    return {f"{folder}/{rel}": data for rel, data in files.items()}


@pytest.mark.parametrize("point", DAEMON_POINTS, ids=lambda p: p.name.split(":")[0])
async def test_daemon_killed_then_restarted_completes(point: DaemonPoint, tmp_path: Path) -> None:
    emulator_dir, state_dir, output = tmp_path / "emulator", tmp_path / "state", tmp_path / "out"
    async with emulator_at(emulator_dir, point.faults, job_tick=point.job_tick) as emulator:

        def config(**export: Any) -> Path:
            return write_config(
                tmp_path / "config.toml",
                emulator,
                tmp_path,
                upload={"shard_max_files": 50},
                job={"workflow_id": "wf-reliability", "poll_seconds": 0.1},
                export={"min_free_bytes": 0, **export},
                daemon={"output_dir": str(output), "batch_window_seconds": 1.0},
            )

        async with daemon(config(**point.export), emulator, state_dir) as first:
            # Files keep arriving while the daemon works: two waves, a moment apart.
            sources = make_sources(tmp_path / "src" / "wave0", 150, 2, seed=11)
            await anyio.sleep(0.3)
            more = make_sources(tmp_path / "src" / "wave1", 150, 1, seed=12)
            everything = Sources(
                tmp_path / "src",
                {**_under("wave0", sources.images), **_under("wave1", more.images)},
                {**_under("wave0", sources.videos), **_under("wave1", more.videos)},
            )
            probe = Probe(Watched(first.process))
            probe.proc.events = first.events

            async def triggered() -> bool:
                if point.trigger(probe):
                    return True
                assert first.process.returncode is None
                probe.emulator = emulator.state()
                probe.manifest = await read_manifest(state_dir)
                probe.temps = temporary_leftovers(output)
                return False

            await wait_for(triggered, "the crash point", timeout=TRIGGER_TIMEOUT, interval=0.01)
            first.process.send_signal(signal.SIGKILL)
            assert await first.process.wait() == -signal.SIGKILL
        probe.emulator = emulator.state()
        probe.manifest = await read_manifest(state_dir)
        probe.temps = temporary_leftovers(output)
        assert point.landed(probe), (point.name, probe.manifest, probe.counters)
        in_flight = probe.manifest.in_flight
        batches_so_far = input_batches(probe.emulator, "img") + input_batches(probe.emulator, "vid")
        check_partial_output(probe.emulator, emulator_dir, output, batches_so_far)

        emulator.set_faults(None)
        async with daemon(config(), emulator, state_dir) as second:
            try:
                await wait_for(
                    lambda: results_ready(emulator.state(), emulator_dir, output, everything),
                    "results_ready(emulator.state(), emulator_dir, output, everything)",
                    timeout=90,
                )
            except TimeoutError:
                story = [
                    {k: v for k, v in e.items() if k not in ("timestamp", "logger")}
                    for e in second.events
                    if e.get("level") != "debug"
                ]
                raise AssertionError(
                    f"the restarted daemon did not finish: {await read_manifest(state_dir)}; "
                    f"batches {sorted(emulator.state()['batches'])}; log {story[-25:]}"
                ) from None
            assert await second.terminate() == 0
        state = emulator.state()

    images, videos = input_batches(state, "img"), input_batches(state, "vid")
    delivery = check_delivered(state, everything, images, videos)
    check_results(state, emulator_dir, output, images + videos)
    assert delivery.extra_receipts <= in_flight, (point.name, delivery, in_flight)
    print(
        f"daemon crash point '{point.name}': {in_flight} files in flight, "
        f"{delivery.extra_receipts} received twice, {len(probe.temps)} temporary files swept, "
        f"{len(images)} image and {len(videos)} video batches"
    )
