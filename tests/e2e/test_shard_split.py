"""A shard over the size storage takes is sent in halves, never failed whole; one image over it
fails alone, named, and every other one arrives once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rfbatch.emulator import Emulator, EmulatorConfig
from rfbatch.transfer import signed
from tests.conftest import emulator_config_with
from tests.e2e.support import cli_env, make_tree, received_digests, run_cli, settings_for, sha
from tests.e2e.test_upload_pipeline import upload

LIMIT = 200_000  # bytes storage takes in one body: several images, far from a whole shard


@pytest.fixture(params=[400, 413], ids=["gcs-400", "413"])
def emulator_config(tmp_path: Path, request: pytest.FixtureRequest) -> EmulatorConfig:
    # Storage refuses a body over the limit as GCS does (400 EntityTooLarge), or with a 413.
    return emulator_config_with(tmp_path, max_upload_bytes=LIMIT, too_large_status=request.param)


async def test_a_shard_over_the_stated_limit_goes_in_halves(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 40, size=20_000)  # ~800 KB: one shard of defaults, four times over
    settings = settings_for(emulator, tmp_path / "state")

    with capture_logs() as logs:
        result = await upload(settings, src)

    assert result.complete, result.tally.snapshot()
    assert received_digests(emulator, "imgs") == {sha(d): 1 for d in files.values()}
    assert [e for e in logs if e["event"] == "upload.split"]
    assert emulator.state()["counters"]["putsRejected"] == 0  # split before anything was sent


async def test_storage_refusing_a_body_as_too_large_splits_it_too(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Storage that states no limit, and answers 400 EntityTooLarge (or 413) once a body is over.
    monkeypatch.setattr("rfbatch.pipeline.upload.stated_limit", lambda _: None)
    src = tmp_path / "src"
    files = make_tree(src, 40, size=20_000)

    result = await upload(settings_for(emulator, tmp_path / "state"), src)

    assert result.complete, result.tally.snapshot()
    assert received_digests(emulator, "imgs") == {sha(d): 1 for d in files.values()}
    assert emulator.state()["counters"]["putsRejected"] > 0


async def test_one_image_over_the_limit_fails_alone_and_the_rest_arrive(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 12, size=20_000)
    big = src / "huge.png"
    big.write_bytes(b"\x89PNG" + bytes(LIMIT + 1))
    env = cli_env(emulator, tmp_path / "state")

    done = await run_cli(["upload", str(src), "--batch", "split", "--json"], env)

    assert done.returncode == 1, done.stderr.decode()
    report = json.loads(done.stdout)
    [failed] = report["failed"]
    assert failed["path"] == str(big)
    assert "too large" in failed["reason"]
    assert received_digests(emulator, "split") == {sha(d): 1 for d in files.values()}


def test_the_limit_a_signed_url_states_is_read_from_either_place() -> None:
    from rfbatch.api.schemas import SignedUrl

    ranged = SignedUrl(
        upload_url="https://s/u", extension_headers={"X-Goog-Content-Length-Range": "0,5000"}
    )
    assert signed.stated_limit(ranged) == 5000
    both = SignedUrl(
        upload_url="https://s/u",
        extension_headers={"x-goog-content-length-range": "0,5000"},
        max_file_size=4000,
    )
    assert signed.stated_limit(both) == 4000
    assert signed.stated_limit(SignedUrl(upload_url="https://s/u")) is None
