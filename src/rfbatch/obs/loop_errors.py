"""What the event loop reports on its own: one line, never a traceback.

The loop hands its exception handler the errors that no task awaits. The one met in practice is a
TLS handshake failing on a connection whose request was already given up: an export that stops at
the first untrusted certificate (and says so once, exit 3) cancels the downloads still connecting,
and uvloop then reports each of their handshake failures. asyncio's default handler would print
each with a traceback under the command's one-line error. Transport errors of abandoned
connections are logged at debug; anything else as one warning line, its traceback at debug only.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import structlog

log = structlog.get_logger("rfbatch.loop")

# Errors of a connection, not of rfbatch's code: whoever still waited on it has seen them already.
_TRANSPORT_ERRORS = (ssl.SSLError, ssl.CertificateError, ConnectionError, TimeoutError)


def handle(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    message = str(context.get("message", ""))
    if isinstance(exc, _TRANSPORT_ERRORS):
        log.debug("loop.transport_error", message=message, error=exc)
        return
    log.warning("loop.error", message=message, error=exc if exc is not None else "")
    if exc is not None:
        log.debug("loop.error_traceback", exc_info=exc)


def install() -> None:
    """Route the running loop's unhandled errors through :func:`handle`."""
    asyncio.get_running_loop().set_exception_handler(handle)
