"""What an HTTP answer means: is its status worth retrying, how long did the server ask to wait,
and what did it say (in a short, redacted message fit for a log line or an error)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

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
