"""Small edges an operator meets on the first day (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

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
