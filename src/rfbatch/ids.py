"""Identifiers: batch and job ids (validated before any call, derived deterministically when
needed) and the API key's form."""

from __future__ import annotations

import hashlib
import re

from rfbatch.errors import ConfigError

BATCH_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
JOB_ID_RE = re.compile(r"^[a-z0-9_-]{1,20}$")
BATCH_ID_MAX = 64
JOB_ID_MAX = 20


def validate_batch_id(batch_id: str) -> str:
    """Return ``batch_id`` unchanged, or raise :class:`ConfigError` naming it."""
    if not BATCH_ID_RE.fullmatch(batch_id):
        raise ConfigError(
            f"invalid batch id {batch_id!r}: use 1-64 characters from a-z, 0-9, '-' and '_'"
        )
    return batch_id


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` unchanged, or raise :class:`ConfigError` naming it."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise ConfigError(
            f"invalid job id {job_id!r}: use 1-20 characters from a-z, 0-9, '-' and '_'"
        )
    return job_id


def job_id_for_batch(batch_id: str) -> str:
    """A job id derived from a batch id, so that a retried start is idempotent.

    Short batch ids are kept readable (``j-<batch>``); longer ones keep a readable prefix and
    add a hash of the whole id so that two batches never share a job id.
    """
    validate_batch_id(batch_id)
    candidate = f"j-{batch_id}"
    if len(candidate) <= JOB_ID_MAX:
        return candidate
    digest = hashlib.sha256(batch_id.encode()).hexdigest()[:8]
    head = batch_id[: JOB_ID_MAX - len(digest) - 3].rstrip("-_")
    return f"j-{head}-{digest}"


KEY_SOURCES = "ROBOFLOW_API_KEY, RFBATCH_API__KEY or [api] key in the config"


def validate_api_key(key: str | None) -> str:
    """The key without surrounding white space, or a ConfigError that never shows the key.

    A key travels as a URL query value: a space, a control character or a non-ASCII character
    inside it is a paste gone wrong (a quote, a line break), never a key the service issued.
    """
    value = (key or "").strip()
    if not value:
        raise ConfigError(f"no API key: set {KEY_SOURCES}")
    for position, char in enumerate(value, start=1):
        if not (char.isascii() and char.isprintable()) or char.isspace():
            what = "a space" if char.isspace() else f"the character U+{ord(char):04X}"
            raise ConfigError(
                f"the API key holds {what} at position {position} of {len(value)}: "
                f"check how it was copied into {KEY_SOURCES}"
            )
    return value
