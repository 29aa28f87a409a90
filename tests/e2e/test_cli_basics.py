"""The command line itself: help, the emulator command, the API-shaped batch commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from rfbatch.cli.main import COMMANDS, load_command
from rfbatch.emulator import Emulator
from tests.e2e.support import RFBATCH, cli_env, make_tree, run_cli


async def test_help_lists_the_commands() -> None:
    done = await run_cli(["--help"], {"PATH": "/usr/bin:/bin", "COLUMNS": "120"})
    assert done.returncode == 0
    out = done.stdout.decode()
    commands = ("sync", "upload", "export", "run", "batch", "job", "config", "emulator", "demo")
    for command in commands:
        assert command in out


def loaded_after(args: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``rfbatch ARGS``."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from rfbatch.cli import build_app\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    build_app()({args!r})\n"
        f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    return list(json.loads(done.stdout.decode().splitlines()[-1]))


def test_help_and_version_load_no_command() -> None:
    heavy = ("rfbatch.api.client", "rfbatch.api.schemas", "rfbatch.pipeline.daemon", "aiohttp")
    assert loaded_after(["--help"], heavy) == []
    assert loaded_after(["--version"], heavy) == []


async def test_a_command_loads_only_its_own_stack_and_a_typo_is_named() -> None:
    # `upload` must not pay at start-up for the emulator, the daemon or the job tables.
    others = ("rfbatch.emulator", "aiohttp.web", "rfbatch.pipeline.daemon", "rfbatch.cli.job_cmd")
    assert loaded_after(["upload", "--help"], (*others, "rfbatch.pipeline.export")) == []
    typo = await run_cli(["uplod"], {"PATH": "/usr/bin:/bin", "COLUMNS": "120"})
    assert typo.returncode == 2
    assert "No such command 'uplod'" in typo.stderr.decode()


def test_the_root_help_summaries_are_the_commands_own() -> None:
    for name in COMMANDS:
        help_text = load_command(name).help or ""
        assert help_text.split("\n\n")[0] == COMMANDS[name].summary, name


def test_emulator_command_serves_the_contract_and_stops_on_sigterm(tmp_path: Path) -> None:
    args = [*RFBATCH, "emulator", "--port", "0", "--api-key", "k1", "--workspace", "ws1"]
    args += ["--state-dir", str(tmp_path / "emu")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base_url = line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:"), line
        with urllib.request.urlopen(f"{base_url}/?api_key=k1", timeout=30) as resp:  # noqa: S310
            assert json.load(resp)["workspace"] == "ws1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_batch_commands_answer_in_json(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 40)
    env = cli_env(emulator, tmp_path / "state")
    assert (await run_cli(["upload", str(src), "--batch", "inspect"], env)).returncode == 0

    listed = await run_cli(["batch", "list", "--json"], env)
    shown = await run_cli(["batch", "show", "inspect", "--json"], env)
    counted = await run_cli(["batch", "count", "inspect", "--json"], env)
    files = await run_cli(["batch", "files", "inspect", "--json"], env)
    shards = await run_cli(["batch", "shards", "inspect", "--json"], env)
    missing = await run_cli(["batch", "show", "no-such-batch"], env)

    assert [b["batchId"] for b in json.loads(listed.stdout)] == ["inspect"]
    assert json.loads(shown.stdout)["batchType"] == "sharded-batch"
    assert json.loads(counted.stdout)["count"] == 40
    assert len(json.loads(files.stdout)) == 40
    assert sum(s["shardObjectsCount"] for s in json.loads(shards.stdout)) == 40
    assert missing.returncode == 3
    assert "no-such-batch" in missing.stderr.decode() or "404" in missing.stderr.decode()


async def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    done = await run_cli(
        ["demo", "--images", "60", "--workdir", str(tmp_path)], {"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 0, done.stderr.decode()
    results = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert results
    assert "succeeded" in done.stdout.decode()


async def test_config_check_says_which_api_address_and_why(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env(emulator, tmp_path / "state").items() if k != "API_BASE_URL"}
    eu = await run_cli(["config", "check"], {**env, "ROBOFLOW_REGION": "eu"})
    assert eu.returncode == 0, eu.stderr.decode()
    assert json.loads(eu.stdout)["api"]["base_url"] == "https://api.roboflow.eu"
    assert "api.base_url https://api.roboflow.eu (from ROBOFLOW_REGION=eu)" in eu.stderr.decode()

    mars = await run_cli(["config", "check"], {**env, "ROBOFLOW_REGION": "mars"})
    assert mars.returncode == 2
    assert mars.stderr.decode().strip().splitlines() == [
        "rfbatch: error: ROBOFLOW_REGION 'mars' is not a region: use us or eu "
        "(or set API_BASE_URL to the address itself)"
    ]
