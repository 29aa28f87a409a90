"""Errors the event loop reports on its own reach the log as one line, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import ssl

from rfbatch.obs import loop_errors
from rfbatch.obs.logging import configure_logging


def _lines(level: str, context: dict[str, object]) -> list[dict[str, object]]:
    out = io.StringIO()
    configure_logging(level=level, fmt="json", stream=out)
    loop = asyncio.new_event_loop()
    try:
        loop_errors.handle(loop, context)
    finally:
        loop.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _untrusted() -> ssl.SSLCertVerificationError:
    return ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")


def test_a_handshake_failing_on_an_abandoned_connection_prints_nothing_at_info() -> None:
    context = {"message": "SSL handshake failed", "exception": _untrusted()}
    assert _lines("info", context) == []
    (line,) = _lines("debug", context)
    assert line["event"] == "loop.transport_error"
    assert "self-signed certificate" in str(line["error"])
    assert "exception" not in line


def test_any_other_unhandled_error_is_one_warning_line_with_its_traceback_at_debug_only() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        context: dict[str, object] = {"message": "Exception in callback", "exception": exc}
    (line,) = _lines("info", context)
    assert line["event"] == "loop.error"
    assert line["error"] == "ValueError: boom"
    assert "Traceback" not in json.dumps(line)
    traced = _lines("debug", context)
    assert [x["event"] for x in traced] == ["loop.error", "loop.error_traceback"]
    assert "Traceback" in str(traced[1]["exception"])


def test_the_cli_routes_the_loops_errors_through_it() -> None:
    async def main() -> asyncio.AbstractEventLoop:
        loop_errors.install()
        return asyncio.get_running_loop()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        assert loop.get_exception_handler() is loop_errors.handle
    finally:
        loop.close()
