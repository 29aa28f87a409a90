"""Small edges an operator meets on the first day (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator
from tests.e2e.support import cli_env, make_tree, run_cli


async def test_dry_run_needs_no_api_key(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 5)
    env = cli_env(emulator, tmp_path / "state")
    del env["ROBOFLOW_API_KEY"]
    env["API_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens there: nothing may be asked

    done = await run_cli(["upload", str(src), "--batch", "dry", "--dry-run", "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    listing = json.loads(done.stdout)
    assert listing["count"] == 5
    assert listing["bytes"] == sum(len(d) for d in files.values())


@pytest.mark.parametrize(
    ("key", "section"),
    [
        ("daemon.move_to", 'after_ingest = "move"\nmove_to = "{src}/done"'),
        ("daemon.output_dir", 'output_dir = "{src}/results"'),
        ("state.dir", None),
    ],
)
async def test_paths_written_inside_a_source_are_refused_before_any_work(
    emulator: Emulator, tmp_path: Path, key: str, section: str | None
) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    state = src / "state" if key == "state.dir" else tmp_path / "state"
    daemon = f'[daemon]\nsources = ["{src}"]\nhttp_listen = ""\n'
    if section:
        daemon += section.format(src=src) + "\n"
    config = tmp_path / "c.toml"
    config.write_text(daemon + f'[state]\ndir = "{state}"\n')
    env = cli_env(emulator, state)
    del env["RFBATCH_STATE__DIR"]

    for command in (["config", "check", "-c", str(config)], ["run", "-c", str(config)]):
        done = await run_cli(command, env)
        err = done.stderr.decode().strip()
        assert done.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert key in err
        assert f"inside source {src}" in err
    assert emulator.state()["batches"] == {}
