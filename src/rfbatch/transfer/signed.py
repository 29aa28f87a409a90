"""The data plane: PUT bodies to signed URLs and download files from them.

It has its own aiohttp session (opened by :mod:`rfbatch.http.session`, like the API's) because
its traffic differs from API calls: long bodies, no API key, no cookies, bodies kept as stored.
Signed URLs are used exactly as the service gave them (no re-encoding, which would break the
signature) and are redacted wherever they are shown.

Failures are sorted the way :mod:`rfbatch.errors` describes: a refused or expired URL is
:class:`SignedUrlRejectedError` (a PUT asks ``refresh()`` for a new URL and tries again), a short
body is :class:`IncompleteBodyError`, statuses 408/429/5xx and connection trouble are retried
with backoff, a local file that changed is raised at once as a :class:`LocalFileError`, and an
untrusted storage certificate is a :class:`StorageCertificateError`, which stops the run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import anyio
import structlog
from yarl import URL

from rfbatch.api.schemas import SignedUrl
from rfbatch.errors import (
    ConfigError,
    EntityTooLargeError,
    IncompleteBodyError,
    LocalFileError,
    SignedUrlRejectedError,
    StorageCertificateError,
    TransferError,
    TransientError,
)
from rfbatch.http.failures import classify_transient, describe, raise_transport
from rfbatch.http.policy import RetryPolicy
from rfbatch.http.retry import Retrier, Retryable, RetryEvent, RetryHook
from rfbatch.http.session import SessionHolder, client_timeout, open_session
from rfbatch.http.statuses import is_transient_status, parse_retry_after, server_message
from rfbatch.redact import redact_url
from rfbatch.transfer.adaptive import AdaptiveLimit, Concurrency
from rfbatch.transfer.body import CHUNK_SIZE, BodySource
from rfbatch.transfer.ratelimit import RateLimiter

ByteCounter = Callable[[int], None]
Refresh = Callable[[], Awaitable[SignedUrl]]

# Storage asking to slow down; a pool that meets it halves its concurrency.
_THROTTLE_REASONS = frozenset({"429", "503"})

# The most bytes handed to a TLS connection at once (a read chunk is larger: 512 KiB). A plain
# connection is handed whole chunks: it keeps a view of what it cannot send at once, where TLS
# would encrypt (and hold) the whole chunk while the link is slower than the disk.
_TLS_WRITE_SLICE = 64 * 1024

# A PUT carries the extension headers and Content-Length, nothing a signature could trip on.
_PUT_SKIP_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")


@dataclass(frozen=True)
class TransferConfig:
    """Timeouts and bounds of the signed-URL session."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    refresh_attempts: int = 3
    max_connections: int = 64
    write_chunk_size: int = CHUNK_SIZE
    ca_bundle: Path | None = None
    # Bandwidth caps in bytes per second, shared by all PUTs / all downloads (None: no cap).
    upload_bytes_per_second: int | None = None
    download_bytes_per_second: int | None = None
    # How many PUTs / downloads run at once (None: as many as callers start).
    puts: Concurrency | None = None
    downloads: Concurrency | None = None

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("transfer connect_timeout and read_timeout must be > 0 seconds")
        if self.refresh_attempts < 0:
            raise ConfigError("transfer refresh_attempts must be >= 0")
        if self.max_connections < 1 or self.write_chunk_size < 1:
            raise ConfigError("transfer max_connections and write_chunk_size must be >= 1")


@dataclass(frozen=True)
class TransferStatistics:
    """A snapshot: bytes on the wire (retries included), finished transfers, retries by reason."""

    bytes_sent: int
    bytes_received: int
    puts: int
    downloads: int
    retries: dict[str, int] = field(default_factory=dict)


# The header a GCS signed URL binds its size range to (``min,max``), sent back verbatim.
LENGTH_RANGE_HEADER = "x-goog-content-length-range"


def stated_limit(signed: SignedUrl) -> int | None:
    """The largest body ``signed`` accepts, when its answer says: ``maxFileSize``, or the upper
    end of the content-length range the signature binds. ``None`` when it says nothing usable."""
    limits = [signed.max_file_size] if signed.max_file_size else []
    for name, value in signed.extension_headers.items():
        if name.lower() == LENGTH_RANGE_HEADER:
            upper = value.partition(",")[2].strip()
            if upper.isdigit() and int(upper) > 0:  # "0,0" says nothing usable
                limits.append(int(upper))
    return min(limits) if limits else None


def _expired_hint(status: int, raw: bytes) -> bool:
    # GCS answers an expired V4 URL with 400 ExpiredToken; any 403 means "signature refused".
    return status == 403 or (status == 400 and b"expire" in raw.lower())


class Transfer(SessionHolder):
    """Signed-URL PUTs and downloads; use it as an async context manager."""

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        on_bytes: ByteCounter | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.config = config or TransferConfig()
        super().__init__(
            session,
            Retrier(
                self.config.retry,
                log_event="transfer.retry",
                hooks=[on_retry] if on_retry else [],
            ),
        )
        self._retrier.add_hook(self._on_retry)
        self._timeout = client_timeout(self.config.connect_timeout, self.config.read_timeout)
        self._on_bytes = on_bytes
        up, down = self.config.upload_bytes_per_second, self.config.download_bytes_per_second
        self._up_limit = RateLimiter(up) if up else None
        self._down_limit = RateLimiter(down) if down else None
        self._classify_transient = partial(classify_transient, policy=self.config.retry)
        self._log: Any = structlog.get_logger("rfbatch.transfer")
        puts, downloads = self.config.puts, self.config.downloads
        self.put_slots = AdaptiveLimit(puts, name="put") if puts else None
        self.download_slots = AdaptiveLimit(downloads, name="download") if downloads else None
        self._sent = 0
        self._received = 0
        self._puts = 0
        self._downloads = 0

    def __repr__(self) -> str:
        return "<Transfer>"

    async def _open_session(self) -> aiohttp.ClientSession:
        return await open_session(
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            max_connections=self.config.max_connections,
            ca_bundle=self.config.ca_bundle,
            storage=True,
        )

    def statistics(self) -> TransferStatistics:
        return TransferStatistics(
            bytes_sent=self._sent,
            bytes_received=self._received,
            puts=self._puts,
            downloads=self._downloads,
            retries=dict(self._retrier.counts),
        )

    # --- plumbing ----------------------------------------------------------------------------

    def _on_retry(self, event: RetryEvent) -> None:
        if event.reason in _THROTTLE_REASONS:
            slots = self.put_slots if event.operation == "put" else self.download_slots
            if slots is not None:
                slots.throttled()

    @staticmethod
    def _held(slots: AdaptiveLimit | None) -> AbstractAsyncContextManager[None]:
        return slots.slot() if slots is not None else nullcontext()

    def put_slot(self) -> AbstractAsyncContextManager[None]:
        """One of the PUTs allowed at once, held by the caller around everything a PUT needs
        (its signed URL, its manifest marks and :meth:`put`): work prepared ahead of a slot
        would only wait, holding memory and files marked ``uploading``. A download takes its
        slot inside :meth:`download`, having nothing to prepare."""
        return self._held(self.put_slots)

    def _count(self, n: int, sent: bool, extra: ByteCounter | None) -> None:
        if sent:
            self._sent += n
        else:
            self._received += n
            # Received bytes have crossed the link; sent ones are credited by a SendMeter.
            if self.download_slots is not None:
                self.download_slots.moved(n)
        if self._on_bytes is not None:
            self._on_bytes(n)
        if extra is not None:
            extra(n)

    # --- PUT ---------------------------------------------------------------------------------

    async def put(
        self,
        signed: SignedUrl,
        body: BodySource,
        *,
        refresh: Refresh | None = None,
        on_bytes: ByteCounter | None = None,
    ) -> int:
        """PUT ``body`` to ``signed`` and return the bytes sent in the successful attempt.

        On a refused or expired URL, ``refresh()`` is awaited for a new one (at most
        ``refresh_attempts`` times); without ``refresh`` the :class:`SignedUrlRejectedError`
        is raised. Transient failures are retried with backoff; once retries run out a
        :class:`TransferError` is raised from the last one.
        """
        session = self._require_session()
        current = signed
        stale = False
        refreshes = 0

        def classify(exc: BaseException) -> Retryable | None:
            nonlocal stale, refreshes
            if isinstance(exc, SignedUrlRejectedError):
                if refresh is None or refreshes >= self.config.refresh_attempts:
                    return None
                refreshes += 1
                stale = True
                return Retryable("expired")
            return self._classify_transient(exc)

        async def attempt() -> int:
            nonlocal current, stale
            if stale:
                assert refresh is not None
                current = await refresh()
                stale = False
            return await self._put_once(session, current, body, on_bytes)

        try:
            sent = await self._retrier.call("put", attempt, classify)
        except TransientError as exc:
            raise TransferError(f"PUT gave up after retries: {exc}") from exc
        self._puts += 1
        self._log.debug("transfer.put", url=redact_url(current.upload_url), bytes=sent)
        return sent

    async def _put_once(
        self,
        session: aiohttp.ClientSession,
        signed: SignedUrl,
        body: BodySource,
        on_bytes: ByteCounter | None,
    ) -> int:
        shown = redact_url(signed.upload_url)
        local_failure: list[LocalFileError] = []
        meter = self.put_slots.sending() if self.put_slots is not None else None

        tls = signed.upload_url[:6].lower() == "https:"

        async def stream() -> AsyncGenerator[bytes | memoryview, None]:
            chunks = body.chunks()
            try:
                async for chunk in chunks:
                    if tls and len(chunk) > _TLS_WRITE_SLICE:
                        view = memoryview(chunk)
                        pieces: list[bytes | memoryview] = [
                            view[start : start + _TLS_WRITE_SLICE]
                            for start in range(0, len(view), _TLS_WRITE_SLICE)
                        ]
                    else:
                        pieces = [chunk]
                    for piece in pieces:
                        if self._up_limit is not None:
                            await self._up_limit.take(len(piece))
                        self._count(len(piece), True, on_bytes)
                        if meter is not None:
                            meter.handed(len(piece))
                        yield piece
            except LocalFileError as exc:
                # aiohttp wraps whatever the body raises into a connection error; keep the
                # real cause so a changed file is not mistaken for a network blip.
                local_failure.append(exc)
                raise
            finally:
                # Close the source even when aiohttp stops early, so the file is released.
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()

        headers = dict(signed.extension_headers)
        headers["Content-Length"] = str(body.length)
        payload = stream()
        try:
            async with session.request(
                signed.method.upper() or "PUT",
                URL(signed.upload_url, encoded=True),
                data=payload,
                headers=headers,
                skip_auto_headers=_PUT_SKIP_HEADERS,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            if local_failure:
                raise local_failure[0] from None
            raise_transport("PUT", shown, exc, certificate=StorageCertificateError)
        finally:
            await payload.aclose()
        if local_failure:
            raise local_failure[0]
        if not 200 <= status < 300:
            _raise_for_status("PUT", status, raw, shown, retry_after)
        if meter is not None:
            meter.delivered()
        return body.length

    # --- download ----------------------------------------------------------------------------

    async def download(
        self,
        url: str,
        dest: Path,
        expected_length: int | None = None,
        *,
        on_bytes: ByteCounter | None = None,
    ) -> int:
        """Stream ``url`` into ``dest`` (a temporary name), fsync it, and return its length.

        The length is checked against Content-Length and ``expected_length``; a short body or a
        transient failure starts the download again from scratch. A 403 raises
        :class:`SignedUrlRejectedError` at once so the caller can list the file again for a
        fresh URL. On any failure the partial ``dest`` is removed.
        """
        received, _ = await self._download(url, dest, expected_length, on_bytes, keep=False)
        return received

    async def download_or_keep(
        self, url: str, dest: Path, *, on_bytes: ByteCounter | None = None
    ) -> tuple[int, bytes | None]:
        """:meth:`download`, except that a body no larger than one write chunk
        (``write_chunk_size``) is returned in memory and ``dest`` is never created.

        Returns ``(length, body)``: ``body`` is ``None`` when the body went into ``dest``,
        fsynced. A caller that keeps many small results this way writes and flushes them
        together (one thread call and one flush for a group instead of one each per file).
        """
        return await self._download(url, dest, None, on_bytes, keep=True)

    async def _download(
        self,
        url: str,
        dest: Path,
        expected_length: int | None,
        on_bytes: ByteCounter | None,
        *,
        keep: bool,
    ) -> tuple[int, bytes | None]:
        session = self._require_session()

        async def attempt() -> tuple[int, bytes | None]:
            return await self._download_once(session, url, dest, expected_length, on_bytes, keep)

        try:
            async with self._held(self.download_slots):
                got = await self._retrier.call("download", attempt, self._classify_transient)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.Path(dest).unlink(missing_ok=True)
            if isinstance(exc, TransientError):
                raise TransferError(f"download gave up after retries: {exc}") from exc
            raise
        # No log line per download: thousands a second would spend more on logging than on
        # the files (the export logs each file it places).
        self._downloads += 1
        return got

    async def _download_once(
        self,
        session: aiohttp.ClientSession,
        url: str,
        dest: Path,
        expected_length: int | None,
        on_bytes: ByteCounter | None,
        keep: bool,
    ) -> tuple[int, bytes | None]:
        received = 0
        announced: int | None = None
        kept: bytes | None = None
        try:
            async with session.get(
                URL(url, encoded=True),
                # Bytes as stored: a transparently decoded body would fail the length check.
                headers={"Accept-Encoding": "identity"},
                timeout=self._timeout,
            ) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
                    _raise_for_status("download", resp.status, raw, redact_url(url), retry_after)
                announced = resp.content_length
                if (
                    announced is not None
                    and expected_length is not None
                    and announced != expected_length
                ):
                    raise IncompleteBodyError(
                        f"download announces {announced} bytes, expected {expected_length} "
                        f"({redact_url(url)})"
                    )
                # Small files (most results) are written in one worker-thread call (open, write,
                # fsync, close), or kept in memory for the caller: per-file thread hops, not
                # bytes, are what small downloads cost. The file is opened only once the body
                # outgrows one write chunk.
                out: anyio.AsyncFile[bytes] | None = None
                try:
                    pending: list[bytes] = []
                    pending_size = 0
                    async for chunk in resp.content.iter_any():
                        if self._down_limit is not None:
                            await self._down_limit.take(len(chunk))
                        received += len(chunk)
                        self._count(len(chunk), False, on_bytes)
                        if expected_length is not None and received > expected_length:
                            raise IncompleteBodyError(
                                f"download ran past the expected {expected_length} bytes "
                                f"({redact_url(url)})"
                            )
                        pending.append(chunk)
                        pending_size += len(chunk)
                        if pending_size >= self.config.write_chunk_size:
                            if out is None:
                                out = await anyio.open_file(dest, "wb")
                            await out.write(b"".join(pending))
                            pending.clear()
                            pending_size = 0
                    rest = b"".join(pending)
                    if out is None:
                        if keep:
                            kept = rest
                        else:
                            await anyio.to_thread.run_sync(_write_whole, dest, rest)
                    else:
                        if rest:
                            await out.write(rest)
                        await out.flush()
                        await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
                finally:
                    if out is not None:
                        with anyio.CancelScope(shield=True):
                            await out.aclose()
        except aiohttp.ClientPayloadError as exc:
            raise IncompleteBodyError(
                f"download body ended early after {received} bytes ({redact_url(url)}): "
                f"{describe(exc)}"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise_transport("download", redact_url(url), exc, certificate=StorageCertificateError)
        wanted = expected_length if expected_length is not None else announced
        if wanted is not None and received != wanted:
            raise IncompleteBodyError(
                f"download got {received} of {wanted} bytes ({redact_url(url)})"
            )
        return received, kept


def _write_whole(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _raise_for_status(
    what: str, status: int, raw: bytes, shown: str, retry_after: str | None
) -> NoReturn:
    """Storage's answer to a PUT or a download that was not a success, as an rfbatch error."""
    reason = server_message(raw)
    if status == 413 or (status == 400 and b"entitytoolarge" in raw.lower()):
        raise EntityTooLargeError(f"{what} refused as too large (HTTP {status}): {reason}")
    if _expired_hint(status, raw):
        raise SignedUrlRejectedError(f"{what} refused with HTTP {status}: {reason} ({shown})")
    if is_transient_status(status):
        # The error's own str() adds the status and the URL.
        raise TransientError(
            f"{what} refused: {reason}",
            status=status,
            url=shown,
            retry_after=parse_retry_after(retry_after),
        )
    raise TransferError(f"{what} refused with HTTP {status}: {reason} ({shown})")
