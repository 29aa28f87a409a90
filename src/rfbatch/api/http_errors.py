"""Turn HTTP statuses and aiohttp failures into rfbatch errors, keeping secrets out of them.

Shared by the API client and the signed-URL transfer: both need ``Retry-After`` parsed, a short
message pulled out of an error body, and foreign exceptions chained without their text leaking a
URL (aiohttp puts the full request URL, query string included, into some of its messages).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from rfbatch.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TransientError,
    UnauthorizedError,
)
from rfbatch.redact import redact_text

TRANSIENT_STATUSES = frozenset({408, 429})
MESSAGE_LIMIT = 300
_SPACES = re.compile(r"\s+")


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _clip(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def server_message(body: bytes, *secrets: str) -> str:
    """The service's own words: ``error`` or ``message`` (section 12.5), else a body excerpt."""
    data: Any = None
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(body)
    if isinstance(data, dict):
        for key in ("error", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value, sort_keys=True)
            if isinstance(value, str) and value.strip():
                return redact_text(_clip(value), *secrets)
    text = body.decode("utf-8", errors="replace")
    return redact_text(_clip(text), *secrets) or "(empty body)"


def error_for_status(
    status: int,
    message: str,
    *,
    url: str | None,
    retry_after: float | None = None,
) -> ApiError:
    """The rfbatch error for a non-2xx answer of the API (contract 1.5)."""
    if status == 401:
        return UnauthorizedError(f"{message} (check ROBOFLOW_API_KEY)", status=status, url=url)
    if status in (402, 403):
        return ForbiddenError(message, status=status, url=url)
    if status == 404:
        return NotFoundError(message, status=status, url=url)
    if status == 409:
        return ConflictError(message, status=status, url=url)
    if is_transient_status(status):
        return TransientError(message, status=status, url=url, retry_after=retry_after)
    return BadRequestError(message, status=status, url=url)


def transport_reason(exc: BaseException) -> str:
    """Metrics label for a failure with no HTTP status: "timeout" or "connection"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError):
            return "timeout"
        current = current.__cause__ or current.__context__
    return "connection"


def chain_is_clean(exc: BaseException, *secrets: str) -> bool:
    """True when no exception in ``exc``'s chain shows a URL query or a secret in its text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if redact_text(text, *secrets) != text:
            return False
        current = current.__cause__ or current.__context__
    return True


def describe(exc: BaseException, *secrets: str) -> str:
    """``Type: text`` of a foreign exception, redacted."""
    text = redact_text(str(exc), *secrets)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
