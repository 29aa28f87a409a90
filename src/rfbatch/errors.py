"""The one exception tree of rfbatch.

Errors are classified by what the caller should do, not by where they came from::

    RfbatchError
    ├── ConfigError                 bad settings or arguments: stop before any work (exit 2)
    ├── FatalError                  nothing will work until a person acts: stop the run (exit 3);
    │                               the base of FatalApiError, ApiUnreachableError and
    │                               StorageCertificateError below
    ├── ApiError                    the service answered with an error, or could not be reached
    │   ├── FatalApiError           (also a FatalError) retrying will not help; the run stops
    │   │   ├── UnauthorizedError   401: missing or wrong API key
    │   │   └── ForbiddenError      402/403: plan or permission
    │   ├── NotFoundError           404: unknown batch, job or stage
    │   ├── ConflictError           409: job id exists with another definition
    │   ├── BadRequestError         400 and other 4xx: the request itself is wrong
    │   ├── DecodeError             2xx whose body is not the JSON the contract promises
    │   └── TransientError          408, 429, 5xx, connection errors, timeouts: retry
    │       └── ApiUnreachableError (also a FatalError) no answer at all through every retry
    ├── TransferError               a signed-URL PUT or a download went wrong
    │   ├── SignedUrlRejectedError  403 / expired URL: ask for a fresh URL, then retry
    │   ├── IncompleteBodyError     fewer (or more) bytes than announced: retry
    │   └── StorageCertificateError (also a FatalError) storage's TLS certificate is not trusted
    ├── LocalFileError              one local file cannot be sent: skip it, record why, go on
    │   ├── FileUnreadableError
    │   └── FileChangedError        size/mtime moved while it was read: re-queue, never send half
    ├── UnsafePathError             a name from the server would land outside the output folder
    └── StateError                  the manifest (the ledger) cannot do what it was asked
        ├── ManifestClosedError     used after close(): the caller's shutdown order is wrong
        ├── UnknownBatchError       no batch with that id was ever recorded
        ├── UnknownShardError       no shard with that id was ever recorded
        ├── InvalidStateError       a state or kind outside its allowed values: a caller's bug
        └── UnresumableRowError     a file row lacks the scan details to rebuild its FoundFile

Messages never hold the API key or a signed URL's query string: every URL that reaches an
exception goes through :func:`rfbatch.redact.redact_url` first.
"""

from __future__ import annotations


class RfbatchError(Exception):
    """Base of every error rfbatch raises on purpose."""


class ConfigError(RfbatchError):
    """Invalid settings or arguments; raised before any work starts."""


class FatalError(RfbatchError):
    """Retrying will not help and neither will going on with other items: stop the run.

    Catch sites that fail one item and go on with the next let this one through.
    """


class ApiError(RfbatchError):
    """The API answered with an error status, or could not be reached.

    ``status`` is the HTTP status (``None`` when no response arrived), ``url`` is already redacted.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        self.message = message
        self.status = status
        self.url = url
        super().__init__(message)

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{code}{self.message}{where}"


class FatalApiError(ApiError, FatalError):
    """Retrying will not help and nothing else will work either: stop the run."""


class UnauthorizedError(FatalApiError):
    """401: the API key is missing or wrong."""


class ForbiddenError(FatalApiError):
    """402 or 403: the workspace lacks the feature, or the key lacks the permission."""


class NotFoundError(ApiError):
    """404: the batch, job or stage does not exist."""


class ConflictError(ApiError):
    """409: a job with this id exists with a different definition."""


class BadRequestError(ApiError):
    """400 or another 4xx: the request is wrong; the service's message says how."""


class DecodeError(ApiError):
    """A successful response whose body is not the JSON the contract describes."""


class TransientError(ApiError):
    """Worth retrying: 408, 429, 5xx, connection errors and timeouts.

    ``retry_after`` holds the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after


class ApiUnreachableError(TransientError, FatalError):
    """The API gave no answer at all (refused, unresolvable, timed out) through every retry.

    No file can get past it, so a run stops with one line (exit 3) instead of failing every file
    in turn; it stays a TransientError so a job wait, which outlives short outages, polls again.
    """


class TransferError(RfbatchError):
    """A PUT to, or a GET from, a signed URL failed."""


class SignedUrlRejectedError(TransferError):
    """The storage refused the signed URL (403, expired): mint a new one and try again."""


class EntityTooLargeError(TransferError):
    """Storage refuses the body as too large (HTTP 413, or 400 EntityTooLarge), or the signed
    URL states a limit the body is over: send it in smaller pieces, or not at all."""


class IncompleteBodyError(TransferError):
    """The body ended before (or ran past) the announced length."""


class StorageCertificateError(TransferError, FatalError):
    """The storage host's TLS certificate is not trusted: every transfer would fail the same way.

    ``url`` (already redacted) is shown after the message, as in the other transfer errors.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(f"{message} ({url})" if url else message)


class LocalFileError(RfbatchError):
    """One local file cannot be sent; the file is skipped and the reason recorded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class FileUnreadableError(LocalFileError):
    """The file vanished, or cannot be opened or read."""


class FileChangedError(LocalFileError):
    """The file changed while it was being read; it is re-queued, never sent half-written."""


class UnsafePathError(RfbatchError):
    """A file name from the server, or a tar member, would escape the output folder."""


class StateError(RfbatchError):
    """The manifest cannot do what it was asked; nothing was written by the failing call."""


class ManifestClosedError(StateError):
    """The manifest was used after :meth:`close`."""


class UnknownBatchError(StateError):
    """An update named a batch id the manifest has no row for."""


class UnknownShardError(StateError):
    """An update named a shard id the manifest has no row for."""


class InvalidStateError(StateError):
    """A state or kind outside the values its table allows; checked before any write."""


class UnresumableRowError(StateError):
    """A file row without the root, relative name and kind needed to resume it (a skipped
    file's row, recorded before it was ever scanned as sendable)."""
