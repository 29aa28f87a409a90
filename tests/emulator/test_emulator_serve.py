"""Running the emulator: serve() in a subprocess, emulator_in_thread for sync callers."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rfbatch.emulator import EmulatorConfig, emulator_in_thread

_SERVE = (
    "from pathlib import Path; from rfbatch.emulator import serve, EmulatorConfig; "
    "serve(EmulatorConfig(api_key='sub-key', workspace='sub-ws', state_dir=Path({state!r})))"
)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a loopback URL we built
        data: dict[str, object] = json.loads(resp.read())
        return data


@contextmanager
def serving(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run an emulator command; yields it and the base URL its first line gives."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        prefix = "rfbatch emulator listening on "
        assert first.startswith(prefix), first
        yield proc, first.removeprefix(prefix)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_its_url_first_and_exits_0_on_signal(tmp_path: Path, sig: int) -> None:
    with serving([sys.executable, "-c", _SERVE.format(state=str(tmp_path))]) as (proc, base_url):
        assert base_url.startswith("http://127.0.0.1:")
        assert not base_url.endswith("/")
        assert _get_json(f"{base_url}/?api_key=sub-key") == {"status": "ok", "workspace": "sub-ws"}
        assert _get_json(f"{base_url}/_emulator/state")["workspace"] == "sub-ws"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    assert (tmp_path / "blobs").is_dir()  # the given state dir is kept


def test_emulator_in_thread_serves_sync_callers() -> None:
    config = EmulatorConfig(api_key="k", workspace="thread-ws")
    with emulator_in_thread(config) as emu:
        assert _get_json(f"{emu.base_url}/?api_key=k")["workspace"] == "thread-ws"
        assert emu.state()["workspace"] == "thread-ws"
        emu.expire_urls()
        emu.set_faults(None)
        base_url = emu.base_url
    with pytest.raises(urllib.error.URLError, match="refused"):
        _get_json(f"{base_url}/?api_key=k")


def test_emulator_command_with_tls_prints_an_https_url_and_writes_the_ca(tmp_path: Path) -> None:
    from tests.e2e.support import RFBATCH

    command = [*RFBATCH, "emulator", "--tls", "--state-dir", str(tmp_path), "--link", "rtt=5ms"]
    with serving(command) as (proc, base_url):
        assert base_url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        state_url = f"{base_url}/_emulator/state"
        with urllib.request.urlopen(state_url, timeout=10, context=trust) as r:  # noqa: S310
            assert json.loads(r.read())["workspace"] == "emulator-ws"
        # Without the CA, the certificate is refused: checks are never off.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(state_url, timeout=10)  # noqa: S310
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_emulator_command_refuses_a_bad_link_naming_the_part() -> None:
    from tests.e2e.support import RFBATCH

    done = subprocess.run(
        [*RFBATCH, "emulator", "--link", "rtt=40ms,conn=fast"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rfbatch: error: --link: link part 'conn=fast': the value is not like 25MB/s"
    ]
