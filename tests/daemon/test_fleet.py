"""Three ``rfbatch run`` workers sharing one PostgreSQL ledger, one of them SIGKILLed midway
(issue 15): every file arrives, extra copies stay within one worker's in-flight bound, the fleet
fills one batch per window, each batch's job is started once and its results exported once,
and the survivors stop cleanly."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import anyio
import asyncpg

from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from tests.daemon.support import DaemonProcess, daemon, write_config
from tests.daemon.test_daemon import image_batches
from tests.e2e.support import make_tree, received_digests, sha
from tests.waiting import wait_for

WORKERS = 3
FILES = 3000
WAVES = 30  # one a second: 3,000 files over half a minute
SHARD_FILES = 50
SHARD_WORKERS = 4
# What one worker can have sent but not recorded when it dies: every shard worker's shard,
# and one queued for each.
IN_FLIGHT_BOUND = 2 * SHARD_WORKERS * SHARD_FILES


def uploaded(emulator: Emulator) -> Counter[str]:
    """Digests received in the fleet's image batches (not the jobs' output batches)."""
    out: Counter[str] = Counter()
    for batch_id in image_batches(emulator):
        out.update(received_digests(emulator, batch_id))
    return out


async def ledger_rows(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def holds_uploads(url: str, pid: int) -> bool:
    rows = await ledger_rows(
        url,
        "SELECT count(*) FROM files f JOIN workers w ON w.worker_id = f.owner"
        " WHERE w.pid = $1 AND f.state = 'uploading'",
        pid,
    )
    return bool(rows[0][0] > 0)


async def test_three_workers_one_killed_share_a_tree_without_gaps(
    emulator: Emulator, tmp_path: Path, ledger_url: str
) -> None:
    out = tmp_path / "out"  # shared: whichever worker drives a batch exports it here
    src = tmp_path / "src"
    configs = [
        write_config(
            tmp_path / f"w{n}.toml",
            emulator,
            tmp_path,
            state={"dir": str(tmp_path / f"state{n}"), "url": ledger_url, "lease_seconds": 3.0},
            upload={"shard_max_files": SHARD_FILES, "shard_workers": SHARD_WORKERS},
            job={"workflow_id": "wf", "poll_seconds": 0.2},
            daemon={"output_dir": str(out), "batch_window_seconds": 10.0},
        )
        for n in range(WORKERS)
    ]
    sent: dict[str, bytes] = {}
    async with AsyncExitStack() as stack:
        workers: list[DaemonProcess] = [
            await stack.enter_async_context(daemon(c, emulator, tmp_path / f"state{n}"))
            for n, c in enumerate(configs)
        ]
        halfway = anyio.Event()

        async def write_waves() -> None:
            started = time.monotonic()
            for wave in range(WAVES):
                files = make_tree(src / f"wave{wave:02}", FILES // WAVES, seed=wave)
                sent.update({f"wave{wave:02}/{rel}": data for rel, data in files.items()})
                if wave == WAVES // 2:
                    halfway.set()
                await anyio.sleep(max(0.0, started + wave + 1 - time.monotonic()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_waves)
            await halfway.wait()
            # SIGKILL midway, while it has a shard on the wire (PUTs slowed to be sure of
            # one): no drain, no lease given back. The writer goes on meanwhile.
            emulator.set_faults(
                FaultProfile(routes={"put": FaultRates(slow=1.0)}, slow_seconds=0.5)
            )
            await wait_for(
                partial(holds_uploads, ledger_url, workers[1].process.pid),
                "the worker to be killed has shards on the wire",
                interval=0.02,
            )
            workers[1].process.kill()
            emulator.set_faults(None)
        killed, survivors = workers[1], [workers[0], workers[2]]

        digests = {sha(v) for v in sent.values()}
        await wait_for(
            lambda: set(uploaded(emulator)) >= digests, "every file received", timeout=240
        )

        async def all_exported() -> bool:
            rows = await ledger_rows(ledger_url, "SELECT state, count(*) FROM batches GROUP BY 1")
            states = {r[0]: r[1] for r in rows}
            return bool(states) and set(states) == {"exported"}

        await wait_for(all_exported, "every batch exported", timeout=240, interval=0.5)
        # Each survivor's /metrics shows the fleet's totals beside its own work.
        for w in survivors:
            assert await w.metric('rfbatch_ledger_files{state="ingested"}') == FILES
            assert await w.metric('rfbatch_fleet_workers{state="live"}') == 2
            assert await w.metric('rfbatch_fleet_workers{state="gone"}') == 1
        assert [await w.terminate() for w in survivors] == [0, 0]
    assert killed.process.returncode not in (0, None)

    # Every file arrived; the extra copies are at most what the killed worker had in flight.
    received = uploaded(emulator)
    assert set(received) == {sha(v) for v in sent.values()}
    extra = sum(n - 1 for n in received.values())
    assert extra <= IN_FLIGHT_BOUND, extra
    # Each worker sent a share before the kill; in the ledger every file ended ingested, the
    # killed worker's included (adopted by a survivor), and none is held by anyone.
    uploaded_by = [sum(e.get("files", 0) for e in w.saw("upload.shard")) for w in workers]
    assert all(n > 0 for n in uploaded_by), uploaded_by
    adopted = sum(e["files"] for w in survivors for e in w.saw("fleet.adopted"))
    assert adopted > 0
    states = await ledger_rows(ledger_url, "SELECT state, count(*) FROM files GROUP BY 1")
    assert {r[0]: r[1] for r in states} == {"ingested": FILES}

    # One batch per window, whichever worker opened it: never a second of one window.
    batches = sorted(image_batches(emulator))
    assert batches
    assert all(b.endswith("-img-000") for b in batches), batches
    assert sum(image_batches(emulator).values()) >= FILES

    # One job started and one export per batch, across the whole fleet.
    events = [e for w in workers for e in w.events]
    started_jobs = Counter(e["batch"] for e in events if e.get("event") == "job.started")
    exports = Counter(e["batch"] for e in events if e.get("event") == "batch.exported")
    assert started_jobs == dict.fromkeys(batches, 1), started_jobs
    assert exports == dict.fromkeys(batches, 1), exports
    assert len(emulator.state()["jobs"]) == len(batches)
    # The results of every file are in the shared output folder.
    results = list(out.rglob("*.jsonl"))
    lines = sum(len(r.read_text().splitlines()) for r in results)
    assert lines >= FILES
    # Both survivors said they stopped; the killed worker's lease lapsed, theirs ended cleanly.
    assert all(w.saw("daemon.stopped") for w in survivors)
    live = await ledger_rows(ledger_url, "SELECT count(*) FROM workers WHERE lease_until > now()")
    assert live[0][0] == 0
