"""Failures with no HTTP status, treated the same way on the API and on storage.

A timeout or a dropped connection is a :class:`TransientError` (retried); an untrusted TLS
certificate is a :class:`FatalError` (the same certificate fails the same way on every retry and
for every item, so the run stops at once and says how to trust a private CA). Foreign exceptions
are chained only when their text is clean: aiohttp puts the full request URL, query string
included, into some of its messages.
"""

from __future__ import annotations

from typing import NoReturn, Protocol

import aiohttp

from rfbatch.errors import FatalError, IncompleteBodyError, TransientError
from rfbatch.http.policy import RetryPolicy
from rfbatch.http.retry import Retryable
from rfbatch.http.tls import CA_HINT
from rfbatch.redact import redact_text


class CertificateFailure(Protocol):
    """Builds the side's own fatal error (an API error or a storage error) for a bad certificate."""

    def __call__(self, message: str, *, url: str | None = None) -> FatalError: ...


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


def raise_transport(
    what: str,
    url: str,
    exc: BaseException,
    *,
    certificate: CertificateFailure,
    secrets: tuple[str, ...] = (),
) -> NoReturn:
    """Raise the rfbatch error for ``exc``, an aiohttp failure or timeout of request ``what``.

    ``url`` is already redacted; ``certificate`` builds the fatal error of a TLS failure.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = describe(exc.certificate_error, *secrets)
        raise certificate(
            f"{what}: TLS certificate verification failed for {exc.host}:{exc.port} "
            f"({reason}); {CA_HINT}",
            url=url,
        ) from None
    err = TransientError(
        f"{what}: {transport_reason(exc)} error ({describe(exc, *secrets)})", url=url
    )
    if chain_is_clean(exc, *secrets):
        raise err from exc
    raise err from None


def classify_transient(exc: BaseException, policy: RetryPolicy) -> Retryable | None:
    """The retry verdict on a failure of either side: ``None`` means raise it."""
    if isinstance(exc, IncompleteBodyError):
        return Retryable("truncated")
    if not isinstance(exc, TransientError):
        return None
    if exc.status is None:
        return Retryable(transport_reason(exc))
    cap = policy.server_error_attempts if exc.status == 500 else None
    return Retryable(str(exc.status), retry_after=exc.retry_after, max_attempts=cap)
