"""A daemon whose listen address is taken stops at once with one line, exit 2 (not a traceback
that systemd would restart into the same failure)."""

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
