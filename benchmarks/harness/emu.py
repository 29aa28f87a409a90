"""The emulator as a separate process, and the few HTTP calls the harness makes to it.

``python -m rfbatch emulator --port 0 --store digests --state-dir DIR`` prints its URL as the
first line of stdout; the harness reads it from a file (never from a pipe nobody drains) with a
deadline. In digests mode the emulator keeps only sizes and SHA-256 of what arrives, and serves
downloads of those items as zero bytes of the recorded size. Stopping it deletes its state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.proctree import process_cpu_s

START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
HTTP_TIMEOUT = 120.0


class EmulatorError(RuntimeError):
    pass


class Emulator:
    """``with Emulator(...) as emu:`` a running emulator at ``emu.url``."""

    def __init__(
        self,
        python: str,
        state_dir: Path,
        log_dir: Path,
        key: str,
        name: str = "emulator",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.python = python
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.key = key
        self.name = name
        self.extra_args = extra_args
        self.url = ""
        self.workspace = "emulator-ws"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Emulator:
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.log_dir / f"{self.name}.out"
        cmd = [
            self.python,
            "-m",
            "rfbatch",
            "emulator",
            "--port",
            "0",
            "--store",
            "digests",
            "--state-dir",
            str(self.state_dir),
            *self.extra_args,
        ]
        env = {**os.environ, "ROBOFLOW_API_KEY": self.key}
        with out_path.open("wb") as out, (self.log_dir / f"{self.name}.err").open("wb") as err:
            self._proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            first = out_path.read_text().partition("\n")
            if first[1]:
                self.url = first[0].split()[-1]
                break
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        if not self.url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
            self.stop()
            raise EmulatorError(f"emulator did not start; see {self.log_dir}/{self.name}.err")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    @property
    def ca(self) -> Path | None:
        """The CA clients must trust when it serves HTTPS (``--tls``)."""
        path = self.state_dir / "ca.pem"
        return path if self.url.startswith("https://") and path.exists() else None

    def env(self) -> dict[str, str]:
        """What a client needs in its environment to talk to this emulator (over HTTPS, the CA
        to trust, by the variable both rfbatch and the official client read)."""
        env = {"ROBOFLOW_API_KEY": self.key, "API_BASE_URL": self.url}
        if self.ca is not None:
            env["REQUESTS_CA_BUNDLE"] = str(self.ca)
        return env

    # --- the API, for checks ----------------------------------------------------------------

    def _get(self, path: str, **query: str) -> Any:
        qs = urllib.parse.urlencode({"api_key": self.key, **query})
        trust = ssl.create_default_context(cafile=str(self.ca)) if self.ca else None
        url = f"{self.url}{path}?{qs}"
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT, context=trust) as resp:  # noqa: S310
            return json.loads(resp.read())

    def count(self, batch: str) -> int:
        base = f"/data-staging/v1/external/{self.workspace}/batches"
        with contextlib.suppress(urllib.error.HTTPError):
            return int(self._get(f"{base}/{batch}/count")["count"])
        return 0

    def batch_summary(self, batch: str) -> tuple[int, int]:
        """(items, bytes) the emulator holds for ``batch``, from ``/_emulator/state``."""
        state = self._get("/_emulator/state")
        found = state["batches"].get(batch)
        if found is None:
            return 0, 0
        items = found["items"]
        return len(items), sum(int(i["size"]) for i in items)

    def wait_count(self, batch: str, expected: int, timeout: float = 120.0) -> int:
        """Poll the count until it reaches ``expected`` (ingest is asynchronous) or times out."""
        deadline = time.monotonic() + timeout
        count = self.count(batch)
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.count(batch)
        return count
