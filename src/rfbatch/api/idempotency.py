"""Ingest ids that make a resent ingest request harmless.

A references or RoboQL ingest is a POST that starts work on the service. When its answer is
lost (a reset, a timeout) the request is sent again, and without an id the service would start
the same ingest twice. With an ``ingestId`` derived from what is ingested, the second request is
recognised (the service answers ``duplicated``), so a retry, or a rerun of the same command,
costs nothing. Where the notifications go is left out: it does not change what is ingested.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Body keys that say where the service reports to, not what it ingests.
_NOT_THE_INPUT = frozenset({"ingestId", "notificationsURL", "notificationCategories"})


def stable_ingest_id(batch_id: str, operation: str, body: Mapping[str, Any]) -> str:
    """The same id for the same batch, operation and input; another for any other."""
    what = {k: v for k, v in body.items() if k not in _NOT_THE_INPUT}
    canonical = json.dumps(
        {"batch": batch_id, "operation": operation, "input": what},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return f"rfbatch-{digest[:32]}"


def with_ingest_id(body: dict[str, Any], batch_id: str, operation: str) -> dict[str, Any]:
    """``body`` with an ``ingestId``: the caller's, else :func:`stable_ingest_id`."""
    if body.get("ingestId"):
        return body
    return {**body, "ingestId": stable_ingest_id(batch_id, operation, body)}
