"""Ingest confirmation when indexing takes longer than the settle time (issue 11 point 1).

The emulator lists a shard as soon as it is received and changes its row when the shard is
indexed, ``ingest_delay`` later. A shard row that exists is not yet a processed shard: the new
files of a batch that already holds some must not be named as rejected while their shard is
still being indexed, and a file the service did reject must still be named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator, EmulatorConfig
from tests.conftest import emulator_config_with
from tests.e2e.support import cli_env, make_tree, run_cli

INDEXING_SECONDS = 3.0
SETTLE_SECONDS = 1.0  # shorter than the indexing: counting rows alone would misfire


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return emulator_config_with(
        tmp_path, check_image_content=True, ingest_delay=INDEXING_SECONDS, vocabulary_seed=11
    )


async def test_files_still_being_indexed_are_waited_for_and_only_the_rejected_one_named(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = {
        **cli_env(emulator, tmp_path / "state"),
        "RFBATCH_UPLOAD__INGEST_SETTLE_SECONDS": str(SETTLE_SECONDS),
    }
    make_tree(tmp_path / "first", 10, seed=1)
    first = await run_cli(["upload", str(tmp_path / "first"), "--batch", "bb", "--json"], env)
    assert first.returncode == 0, first.stderr.decode()

    # Ten more to the same batch, one of them not an image: the batch's count holds still at
    # ten while their shard is indexed, and its row is already listed.
    second_src = tmp_path / "second"
    make_tree(second_src, 10, seed=2)
    corrupt = second_src / "cam0" / "broken.png"
    corrupt.write_bytes(b"not an image at all")
    second = await run_cli(["upload", str(second_src), "--batch", "bb", "--json"], env)

    assert second.returncode == 1, second.stderr.decode()
    summary = json.loads(second.stdout)
    assert [f["path"] for f in summary["failed"]] == [str(corrupt)]
    assert "rejected by the service at ingest" in summary["failed"][0]["reason"]
    assert emulator.state()["batches"]["bb"]["count"] == 20
