"""The API's own reading of an error status (contract 1.5): which rfbatch error each one is."""

from __future__ import annotations

from rfbatch.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TransientError,
    UnauthorizedError,
)
from rfbatch.http.statuses import is_transient_status


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
