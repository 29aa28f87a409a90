"""JSON response helpers: every success carries ``"status": "ok"``; errors name their problem."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def ok(payload: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"status": "ok", **(payload or {})})


def fail(status: int, message: str, *, key: str = "error", **headers: str) -> web.Response:
    """An error body; data-staging routes use ``error``, batch-processing ones ``message``."""
    return web.json_response({key: message}, status=status, headers=headers or None)


class Problem(Exception):
    """Raised by a handler to answer with an error; the middleware renders it."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
