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


def job_id_for_batch(batch_id: str, definition: str | None = None) -> str:
    """A job id derived from a batch id, so that a retried start is idempotent.

    Short batch ids are kept readable (``j-<batch>``); longer ones keep a readable prefix and
    add a hash of the whole id so that two batches never share a job id. ``definition`` (a
    digest of a job definition) gives the batch another job: one per definition, so a
    corrected workflow runs as a new job instead of meeting the old one's 409.
    """
    validate_batch_id(batch_id)
    if definition is None:
        return _fit(f"j-{batch_id}", batch_id)
    return _hashed(f"j-{batch_id}", f"{batch_id}\0{definition}")


def videos_job_for(job_id: str) -> str:
    """The videos batch's job id when the operator named the images batch's job."""
    validate_job_id(job_id)
    return _fit(f"{job_id}-videos", f"{job_id}\0videos")


def _fit(readable: str, key: str) -> str:
    """``readable`` when it is short enough for a job id, else :func:`_hashed`."""
    return readable if len(readable) <= JOB_ID_MAX else _hashed(readable, key)


def _hashed(readable: str, key: str) -> str:
    """A readable head and a hash of ``key``: distinct keys never share a job id."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    head = readable[: JOB_ID_MAX - len(digest) - 1].rstrip("-_")
    return f"{head}-{digest}"


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
