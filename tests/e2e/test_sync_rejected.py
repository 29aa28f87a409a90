"""``rfbatch sync`` when the service rejects one file at ingest, against the strict emulator.

The emulator decodes what it ingests (``check_image_content``), puts no per-file figures in its
shard rows and draws their status words per seed, so rfbatch can only learn of the rejection
from the count, the listing (and the ingest notifications when it receives webhooks).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator, EmulatorConfig
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import cli_env, make_tree, result_records, run_cli

GOOD = 300


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(
        api_key=API_KEY,
        workspace=WORKSPACE,
        state_dir=tmp_path / "emulator",
        check_image_content=True,
        # Indexing lags the PUT: the batch answers 404 until its shard is processed, and
        # confirmation must wait through that.
        ingest_delay=0.2,
        vocabulary_seed=3,
    )


async def test_one_corrupt_image_is_named_and_every_good_one_is_processed(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, GOOD)
    corrupt = src / "cam1" / "corrupt.png"
    corrupt.write_bytes(b"plain text, not an image")
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_JOB__POLL_SECONDS"] = "0.05"
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--workflow", "wf", "--output", str(out), "--json"], env
    )

    assert done.returncode == 1, done.stderr.decode()
    summary = json.loads(done.stdout)
    failed = summary["upload"]["failed"]
    assert [f["path"] for f in failed] == [str(corrupt)]
    assert "rejected by the service at ingest" in failed[0]["reason"]
    (job,) = summary["jobs"].values()
    assert job["state"] == "succeeded"
    records = result_records(out)
    assert len(records) == GOOD
    assert not [name for name in records if "corrupt" in name]
    # The shard rows carried nothing per file: the emulator's strict default.
    (batch,) = [b for k, b in emulator.state()["batches"].items() if k.startswith("images-")]
    assert batch["failedItems"] == [{"name": "corrupt.png", "reason": "invalid-image-content"}]
    assert all(not shard.get("metadata") for shard in batch["shards"])


async def test_with_webhooks_the_rejected_image_carries_the_services_reason(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 40)
    corrupt = src / "corrupt.png"
    corrupt.write_bytes(b"plain text, not an image")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_JOB__POLL_SECONDS"] = "0.05"
    env["RFBATCH_UPLOAD__INGEST_POLL_SECONDS"] = "30"  # only a notification can end the wait soon
    env["RFBATCH_WEBHOOK__LISTEN"] = f"127.0.0.1:{port}"
    env["RFBATCH_JOB__NOTIFICATIONS_URL"] = f"http://127.0.0.1:{port}/webhook"
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--workflow", "wf", "--output", str(out), "--json"], env
    )

    assert done.returncode == 1, done.stderr.decode()
    summary = json.loads(done.stdout)
    failed = summary["upload"]["failed"]
    assert [f["path"] for f in failed] == [str(corrupt)]
    assert "invalid-image-content" in failed[0]["reason"]
    assert len(result_records(out)) == 40
    assert emulator.state()["counters"]["webhooksSent"] > 0
