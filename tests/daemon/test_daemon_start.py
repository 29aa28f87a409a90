"""A daemon that cannot work stops at its start with one line (not a traceback that systemd
would restart into the same failure): a listen address in use (exit 2), a wrong key (exit 3)."""

from __future__ import annotations

import socket
from pathlib import Path

from rfbatch.emulator import Emulator
from tests.daemon.support import write_config
from tests.e2e.support import cli_env, run_cli


async def test_listen_address_in_use_is_one_line_and_exit_2(
    emulator: Emulator, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "c.toml", emulator, tmp_path, daemon={"http_listen": f"127.0.0.1:{port}"}
        )
        done = await run_cli(["run", "-c", str(config)], cli_env(emulator, tmp_path / "state"))
    err = done.stderr.decode().strip()
    assert done.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("rfbatch: error:")]
    assert len(lines) == 1, err
    assert f"127.0.0.1:{port}" in lines[0]
    assert "[daemon] http_listen" in lines[0]
    assert "Traceback" not in err


async def test_a_wrong_key_stops_the_daemon_at_start_with_exit_3(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.toml", emulator, tmp_path, api={"key": "wrong-key-123456"})
    env = cli_env(emulator, tmp_path / "state")
    del env["ROBOFLOW_API_KEY"]

    done = await run_cli(["run", "-c", str(config)], env)

    err = done.stderr.decode().strip()
    assert done.returncode == 3, err
    lines = [line for line in err.splitlines() if line.startswith("rfbatch: error:")]
    assert len(lines) == 1, err
    assert "ROBOFLOW_API_KEY" in lines[0] or "401" in lines[0], lines[0]
    assert "wrong-key-123456" not in err
