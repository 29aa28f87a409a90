"""Shared by the fault, crash and disk-full tests: sources, a fast in-process sync, and checks.

The checks are what a user would look at after a run: every source file is in the emulator's
batches (by content), every result the emulator served is on disk byte for byte, nothing else
and nothing half-written is in the output folder, and the copies the service received twice
stay within the documented bound (see :mod:`rfbatch.pipeline.upload`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import tarfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from rfbatch.api import RetryEvent, RetryPolicy, RoboflowClient
from rfbatch.app import Services, client_config, transfer_config
from rfbatch.emulator import Emulator, EmulatorConfig, FaultProfile, running_emulator
from rfbatch.ids import job_id_for_batch
from rfbatch.pipeline.sync import SyncResult, sync
from rfbatch.pipeline.upload_pass import UploadTarget, source_specs, upload_options
from rfbatch.samples import png_bytes
from rfbatch.settings import Settings, load_settings
from rfbatch.state.manifest import SqliteManifest
from rfbatch.transfer import Transfer
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import RFBATCH, cli_env, lines_of

IMAGE_BATCH = "rel-images"
VIDEO_BATCH = "rel-images-videos"
SHARD_FILES = 50


@dataclass(frozen=True)
class Sources:
    """A source folder and what is in it, by path relative to the folder."""

    root: Path
    images: Mapping[str, bytes]
    videos: Mapping[str, bytes]

    @property
    def image_digests(self) -> set[str]:
        return {sha(d) for d in self.images.values()}

    @property
    def video_digests(self) -> list[str]:
        return sorted(sha(d) for d in self.videos.values())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sources(root: Path, images: int, videos: int, *, seed: int = 0) -> Sources:
    """``images`` tiny PNGs (2-3 KB, all different, nested, repeated basenames) and ``videos``
    fake clips of a few tens of KB."""
    image_files: dict[str, bytes] = {}
    for i in range(images):
        rel = f"cam{i % 4}/hour{i % 3}/img-{i // 12:05d}.png"
        data = png_bytes(8, 8, seed * 1_000_003 + i, pad_to=2000 + (i % 997))
        image_files[rel] = data
    rng = random.Random(seed)
    video_files = {f"clips/clip-{i}.mp4": rng.randbytes(40_000 + 1000 * i) for i in range(videos)}
    for rel, data in {**image_files, **video_files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Sources(root, image_files, video_files)


# --- the emulator and settings ------------------------------------------------------------------


def emulator_config(
    state_dir: Path,
    faults: FaultProfile | None = None,
    *,
    job_tick: float = 0.01,
    ingest_delay: float = 0.0,
) -> EmulatorConfig:
    # Digests only: the inputs' bytes are checked by hash; job outputs are kept as bytes anyway.
    return EmulatorConfig(
        api_key=API_KEY,
        workspace=WORKSPACE,
        state_dir=state_dir,
        store="digests",
        job_tick=job_tick,
        ingest_delay=ingest_delay,
        faults=faults,
    )


@asynccontextmanager
async def emulator_at(
    state_dir: Path,
    faults: FaultProfile | None = None,
    *,
    job_tick: float = 0.01,
    ingest_delay: float = 0.0,
) -> AsyncIterator[Emulator]:
    config = emulator_config(state_dir, faults, job_tick=job_tick, ingest_delay=ingest_delay)
    async with running_emulator(config) as emu:
        yield emu


def reliability_settings(
    emulator: Emulator, state_dir: Path, **sections: Mapping[str, Any]
) -> Settings:
    """Settings aimed at ``emulator`` with fast clocks and generous, bounded retries."""
    tree: dict[str, dict[str, Any]] = {
        "api": {
            "key": API_KEY,
            "base_url": emulator.base_url,
            "retry_attempts": 12,
            "retry_timeout": 120.0,
            "connect_timeout": 5.0,
            "read_timeout": 20.0,
        },
        "state": {"dir": state_dir},
        "scan": {"settle_seconds": 0.0},
        "upload": {
            "ingest_poll_seconds": 0.05,
            "ingest_timeout_seconds": 120.0,
            "shard_max_files": SHARD_FILES,
        },
        "job": {
            "workflow_id": "wf-reliability",
            "poll_seconds": 0.05,
            "poll_seconds_with_webhook": 0.5,
            "wait_timeout_seconds": 120.0,
        },
        "export": {"min_free_bytes": 0, "page_size": 5},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return load_settings(None, tree)


def fast_retry(settings: Settings) -> RetryPolicy:
    """The settings' attempts and total time, with millisecond waits.

    ``api.retry_attempts`` and ``api.retry_timeout`` are the only retry knobs settings expose;
    the waits (0.25 s doubling, up to 1 s of jitter) are not reachable, so in-process tests set
    them here. A 500 may fail 5 attempts instead of 3 so that a 5 % rate of them cannot end a
    call (0.05**3 per call would make a run of a few hundred calls flaky).
    """
    return RetryPolicy(
        attempts=settings.api.retry_attempts,
        timeout=settings.api.retry_timeout,
        wait_initial=0.01,
        wait_max=0.1,
        wait_jitter=0.01,
        server_error_attempts=5,
    )


@dataclass
class RetryLog:
    """Every retry the client and the transfer reported, by operation and reason."""

    events: list[RetryEvent] = field(default_factory=list)

    def __call__(self, event: RetryEvent) -> None:
        self.events.append(event)

    def summary(self) -> dict[str, int]:
        """Retries by ``operation:reason``."""
        out: dict[str, int] = {}
        for e in self.events:
            key = f"{e.operation}:{e.reason}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def count(self, operation: str | None = None, reasons: Sequence[str] = ()) -> int:
        return sum(
            1
            for e in self.events
            if (operation is None or e.operation == operation)
            and (not reasons or e.reason in reasons)
        )


@asynccontextmanager
async def fast_services(settings: Settings, roots: Sequence[Path]) -> AsyncIterator[Services]:
    """:func:`rfbatch.app.open_services`, built from the same configs but with fast waits."""
    policy = fast_retry(settings)
    client_cfg = dataclasses.replace(client_config(settings), retry=policy)
    transfer_cfg = dataclasses.replace(transfer_config(settings), retry=policy)
    async with RoboflowClient(client_cfg) as client, Transfer(transfer_cfg) as transfer:
        manifest = await SqliteManifest.open(settings.state.dir, source_roots=roots)
        try:
            yield Services(settings, client, transfer, manifest)
        finally:
            await manifest.close()


@dataclass
class SyncRun:
    result: SyncResult
    retries: RetryLog


async def sync_in_process(settings: Settings, sources: Sources, output: Path) -> SyncRun:
    """``rfbatch sync SOURCES --workflow ... --output OUTPUT`` in this process."""
    retries = RetryLog()
    async with fast_services(settings, [sources.root]) as services:
        services.client.add_retry_hook(retries)
        services.transfer.add_retry_hook(retries)
        target = UploadTarget(IMAGE_BATCH, VIDEO_BATCH, upload_options(settings))
        specs = source_specs(services, [str(sources.root)])
        result = await sync(services, specs, target, output_dir=output)
    return SyncRun(result, retries)


# --- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What the emulator holds of one run's sources."""

    extra_receipts: int
    """Copies received beyond the first, over every item of the input batches."""
    images_received: int
    videos_received: int


def _items(state: Mapping[str, Any], batches: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for batch in batches:
        out += state["batches"].get(batch, {"items": []})["items"]
    return out


def check_delivered(
    state: Mapping[str, Any],
    sources: Sources,
    image_batches: Sequence[str] = (IMAGE_BATCH,),
    video_batches: Sequence[str] = (VIDEO_BATCH,),
) -> Delivery:
    """Every source file is in a batch of its kind exactly once by content, and nothing else is."""
    images = _items(state, image_batches)
    held = sorted(i["sha256"] for i in images)
    assert held == sorted(sources.image_digests), (
        "the image batches do not hold exactly the source images: "
        f"{len(set(sources.image_digests) - set(held))} missing, "
        f"{len(held) - len(set(held))} held in two batches, "
        f"{len(set(held) - set(sources.image_digests))} unknown"
    )
    videos = _items(state, video_batches)
    assert sorted(v["sha256"] for v in videos) == sources.video_digests, (
        "the video batches do not hold exactly the source videos"
    )
    extra = sum(int(item["received"]) - 1 for item in [*images, *videos])
    return Delivery(extra, len(images), len(videos))


def _served_archive_member(archive: bytes) -> tuple[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        (member,) = tar.getmembers()
        reader = tar.extractfile(member)
        assert reader is not None
        return member.name, reader.read()


def expected_results(
    state: Mapping[str, Any], emulator_dir: Path, input_batch: str
) -> dict[Path, str]:
    """Path under the output folder → sha256 of what the emulator served for ``input_batch``.

    Plain results must land as served; a ``.tar.gz`` must be unpacked, so its member (read from
    the very archive the emulator served, whose digest is checked first) is what must land.
    Empty while the batch's job has written no output yet.
    """
    job_id = job_id_for_batch(input_batch)
    out: dict[Path, str] = {}
    for stage in ("processing", "export"):
        batch_id = f"{job_id}-{stage}"
        for item in state["batches"].get(batch_id, {"items": []})["items"]:
            folder = Path(input_batch) / batch_id / str(item["partName"])
            if not item["name"].endswith(".tar.gz"):
                out[folder / item["name"]] = item["sha256"]
                continue
            archive = (emulator_dir / "outputs" / job_id / "export" / item["name"]).read_bytes()
            assert sha(archive) == item["sha256"]
            name, data = _served_archive_member(archive)
            out[folder / name] = sha(data)
    return out


def files_under(root: Path) -> dict[Path, str]:
    """Relative path → sha256 of every regular file under ``root`` (hidden ones included)."""
    if not root.exists():
        return {}
    found: dict[Path, str] = {}
    for p in root.rglob("*"):
        try:
            if p.is_file():
                found[p.relative_to(root)] = sha(p.read_bytes())
        except FileNotFoundError:
            continue  # a live export renamed or removed its temporary file meanwhile
    return found


def temporary_leftovers(output: Path) -> list[Path]:
    # os.walk, not rglob: a live export removes its extraction folders while this looks, and
    # os.walk passes over a folder gone between listing and entering it.
    found = []
    for root, dirs, names in os.walk(output):
        found += [Path(root, n) for n in (*dirs, *names) if n.startswith(".") or ".rfbatch" in n]
    return found


def check_partial_output(
    state: Mapping[str, Any], emulator_dir: Path, output: Path, input_batches: Sequence[str]
) -> int:
    """After a crash: every visible file in the output is a whole, served result (temporary
    names may remain until the next run sweeps them). Returns how many there are."""
    expected: dict[Path, str] = {}
    for batch in input_batches:
        expected.update(expected_results(state, emulator_dir, batch))
    temps = set(temporary_leftovers(output))
    visible = {
        rel: digest
        for rel, digest in files_under(output).items()
        if output / rel not in temps and not any(output / p in temps for p in rel.parents)
    }
    for rel, digest in visible.items():
        assert expected.get(rel) == digest, f"{rel} in the output is not a whole served result"
    return len(visible)


def check_results(
    state: Mapping[str, Any],
    emulator_dir: Path,
    output: Path,
    input_batches: Sequence[str] = (IMAGE_BATCH, VIDEO_BATCH),
) -> int:
    """The output folder holds exactly the served results, whole, and each input batch's
    results cover exactly the items the emulator holds in it. Returns the files checked."""
    leftovers = temporary_leftovers(output)
    assert not leftovers, f"temporary files left in the output: {leftovers[:5]}"
    expected: dict[Path, str] = {}
    for batch in input_batches:
        wanted = expected_results(state, emulator_dir, batch)
        assert wanted, f"the job of {batch} served no results"
        expected.update(wanted)
        covered: set[str] = set()
        for rel in wanted:
            if rel.parts[1].endswith("-processing"):
                for line in (output / rel).read_text().splitlines():
                    covered.add(str(json.loads(line)["sha256"]))
        inputs = {i["sha256"] for i in _items(state, [batch])}
        assert covered == inputs, f"the results of {batch} do not cover exactly its items"
    assert files_under(output) == expected
    return len(expected)


def duplicate_bound(retries: RetryLog) -> int:
    """Most copies a fault run may have sent twice: each PUT whose answer may have been lost
    (a timeout, or a connection cut after the body went out) re-sends at most one shard."""
    lost = retries.count("put", ("timeout", "connection"))
    return lost * SHARD_FILES


# --- rfbatch in a subprocess ---------------------------------------------------------------------


def cli_env_for(emulator: Emulator, state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of an ``rfbatch`` subprocess aimed at ``emulator`` with fast clocks."""
    env = cli_env(emulator, state_dir)
    env.update(
        RFBATCH_API__RETRY_ATTEMPTS="10",
        RFBATCH_UPLOAD__SHARD_MAX_FILES=str(SHARD_FILES),
        RFBATCH_JOB__POLL_SECONDS="0.05",
        RFBATCH_EXPORT__MIN_FREE_BYTES="0",
        RFBATCH_EXPORT__PAGE_SIZE="5",
        # The crash points are timed for a few transfers at once (three videos sent two at a
        # time leave a moment with some stored and some not): a fixed, small concurrency.
        RFBATCH_UPLOAD__SHARD_WORKERS="4",
        RFBATCH_UPLOAD__VIDEO_WORKERS="2",
        RFBATCH_UPLOAD__ADAPTIVE_CONCURRENCY="false",
        RFBATCH_EXPORT__WORKERS="8",
        RFBATCH_EXPORT__ADAPTIVE_CONCURRENCY="false",
    )
    env.update(overrides)
    return env


def sync_args(sources: Sources, output: Path, *extra: str) -> list[str]:
    return [
        "sync",
        str(sources.root),
        "--batch",
        IMAGE_BATCH,
        "--videos-batch",
        VIDEO_BATCH,
        "--workflow",
        "wf-reliability",
        "--output",
        str(output),
        *extra,
    ]


class Watched:
    """A running ``rfbatch`` whose JSON log lines (stderr) are parsed as they arrive."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.stdout = b""

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        async for line in lines_of(self.process.stderr):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.stdout += chunk

    def saw(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    async def kill(self) -> int:
        """SIGKILL: no handler, no cleanup, no flush; returns the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(30):
            return await self.process.wait()


@asynccontextmanager
async def watched(args: Sequence[str], env: Mapping[str, str]) -> AsyncIterator[Watched]:
    async with await anyio.open_process([*RFBATCH, *args], env=dict(env)) as process:
        proc = Watched(process)
        async with anyio.create_task_group() as tg:
            tg.start_soon(proc.read_logs)
            tg.start_soon(proc.read_stdout)
            try:
                yield proc
            finally:
                if process.returncode is None:
                    process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
                tg.cancel_scope.cancel()


# --- reading a manifest from outside --------------------------------------------------------------


@dataclass(frozen=True)
class ManifestView:
    """Counts read from a manifest another process may be writing (WAL allows readers)."""

    files: Mapping[str, int]
    shards: int
    downloads: Mapping[str, int]
    batches: Mapping[str, str] = field(default_factory=dict)
    """Batch id → state."""

    @property
    def in_flight(self) -> int:
        """Files a crash now would send again: packed or uploading."""
        return self.files.get("packed", 0) + self.files.get("uploading", 0)

    @property
    def total_files(self) -> int:
        return sum(self.files.values())


def _read_manifest(state_dir: Path) -> ManifestView:
    db = state_dir / "manifest.sqlite3"
    if not db.exists():
        return ManifestView({}, 0, {})
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        files = dict(conn.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())
        (shards,) = conn.execute("SELECT count(*) FROM shards").fetchone()
        downloads = dict(
            conn.execute("SELECT state, count(*) FROM downloads GROUP BY state").fetchall()
        )
        batches = dict(conn.execute("SELECT batch_id, state FROM batches").fetchall())
    except sqlite3.OperationalError:
        # Tables not created yet (the run is still migrating).
        return ManifestView({}, 0, {})
    finally:
        conn.close()
    return ManifestView(files, int(shards), downloads, batches)


async def read_manifest(state_dir: Path) -> ManifestView:
    return await anyio.to_thread.run_sync(_read_manifest, state_dir)
