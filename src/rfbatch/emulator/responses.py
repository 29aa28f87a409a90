"""JSON response helpers: every success carries ``"status": "ok"``; errors name their problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from rfbatch.emulator.pagination import PageTokens

T = TypeVar("T")


def ok(payload: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"status": "ok", **(payload or {})})


def fail(status: int, message: str, *, key: str = "error", **headers: str) -> web.Response:
    """An error body; data-staging routes use ``error``, batch-processing ones ``message``."""
    return web.json_response({key: message}, status=status, headers=headers or None)


def paged(
    request: web.Request,
    tokens: PageTokens,
    listing: str,
    seq: Sequence[T],
    key: str,
    render: Callable[[T], dict[str, Any]],
    *,
    keep: Callable[[T], bool] | None = None,
    newest_first: bool = False,
) -> web.Response:
    """The page of ``seq`` the request's ``pageSize`` and ``nextPageToken`` ask for, as
    ``{key: [render(element), ...], "nextPageToken": ...}``; see :meth:`PageTokens.page`."""
    page = tokens.page(
        listing,
        seq,
        token=request.query.get("nextPageToken"),
        page_size=request.query.get("pageSize"),
        keep=keep,
        newest_first=newest_first,
    )
    return ok({key: [render(element) for element in page.items], "nextPageToken": page.next_token})


class Problem(Exception):
    """Raised by a handler to answer with an error; the middleware renders it."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
