"""``rfbatch sync`` when the service rejects one file at ingest, against the strict emulator.

The emulator decodes what it ingests (``check_image_content``), puts no per-file figures in its
shard rows and draws their status words per seed, so rfbatch can only learn of the rejection
from the count, the listing (and the ingest notifications when it receives webhooks).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from rfbatch.emulator import Emulator, EmulatorConfig
from tests.conftest import emulator_config_with
from tests.e2e.support import cli_env, make_tree, result_records, run_cli

GOOD = 300


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    # Indexing lags the PUT: the batch answers 404 until its shard is processed, and
    # confirmation must wait through that.
    return emulator_config_with(
        tmp_path, check_image_content=True, ingest_delay=0.2, vocabulary_seed=3
    )


async def _sync_with_one_corrupt(
    emulator: Emulator, tmp_path: Path, good: int, at: str, **env_extra: str
) -> tuple[Path, dict[str, Any], Path]:
    """Sync ``good`` images plus one corrupt file at ``at``; expect exit 1 naming only that file.

    Returns the corrupt file's path, the JSON summary and the output folder.
    """
    src = tmp_path / "images"
    make_tree(src, good)
    corrupt = src / at
    corrupt.write_bytes(b"plain text, not an image")
    env = {**cli_env(emulator, tmp_path / "state"), "RFBATCH_JOB__POLL_SECONDS": "0.05"}
    env.update(env_extra)
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--workflow", "wf", "--output", str(out), "--json"], env
    )

    assert done.returncode == 1, done.stderr.decode()
    summary: dict[str, Any] = json.loads(done.stdout)
    assert [f["path"] for f in summary["upload"]["failed"]] == [str(corrupt)]
    return corrupt, summary, out


async def test_one_corrupt_image_is_named_and_every_good_one_is_processed(
    emulator: Emulator, tmp_path: Path
) -> None:
    _, summary, out = await _sync_with_one_corrupt(emulator, tmp_path, GOOD, "cam1/corrupt.png")

    assert "rejected by the service at ingest" in summary["upload"]["failed"][0]["reason"]
    (job,) = summary["jobs"]
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    _, summary, out = await _sync_with_one_corrupt(
        emulator,
        tmp_path,
        40,
        "corrupt.png",
        # Only a notification can end the ingest wait soon: the poll is half a minute.
        RFBATCH_UPLOAD__INGEST_POLL_SECONDS="30",
        RFBATCH_WEBHOOK__LISTEN=f"127.0.0.1:{port}",
        RFBATCH_JOB__NOTIFICATIONS_URL=f"http://127.0.0.1:{port}/webhook",
    )

    assert "invalid-image-content" in summary["upload"]["failed"][0]["reason"]
    assert len(result_records(out)) == 40
    assert emulator.state()["counters"]["webhooksSent"] > 0
