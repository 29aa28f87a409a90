"""Fixtures for running the reference client, inference-cli, against the emulator.

The binary comes from ``INFERENCE_BIN`` (default: ``.venv-compat/bin/inference`` beside this
folder). Each test gets its own emulator in a daemon thread; the CLI runs as a subprocess with
``API_BASE_URL`` and ``ROBOFLOW_API_KEY`` pointing at it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from compat.support import API_KEY, WORKSPACE, Cli, Receiver
from rfbatch.emulator import Emulator, EmulatorConfig, emulator_in_thread

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def inference_bin() -> Path:
    raw = os.environ.get("INFERENCE_BIN") or str(REPO / ".venv-compat" / "bin" / "inference")
    path = Path(raw)
    if not path.exists():
        pytest.skip(f"inference-cli not found at {path}; set INFERENCE_BIN")
    return path


@pytest.fixture(scope="session")
def compat_python(inference_bin: Path) -> Path:
    """The reference client's own interpreter (it has cv2 to write real video files)."""
    return inference_bin.parent / "python"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    config = EmulatorConfig(
        api_key=API_KEY,
        workspace=WORKSPACE,
        state_dir=tmp_path / "emulator",
        job_tick=0.02,
        # The references tests serve their files from a plain-HTTP loopback server: the official
        # client sends such URLs as they are (it refuses only an http:// references-file URL).
        allow_http_references=True,
    )
    with emulator_in_thread(config) as emu:
        yield emu


@pytest.fixture
def cli(inference_bin: Path, emulator: Emulator, tmp_path: Path) -> Cli:
    return Cli(inference_bin, emulator, tmp_path)


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with rec.lock:
                rec.received.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    for base in _serve(server):
        rec.url = f"{base}/hook"
        yield rec


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves a folder over HTTP on 127.0.0.1 (a stand-in for cloud storage): (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    for base in _serve(server):
        yield base, root
