"""RoboQL ingest (contract section 3.12): a batch built from the workspace's Asset Library.

The real service evaluates a RoboQL query over the workspace's stored images. The emulator has a
small built-in library instead (:data:`ASSET_LIBRARY`: twelve PNGs, each with a tag and a split)
and a trivial query language over it, enough to exercise the flow a client depends on:

- the query is whitespace-separated terms, all of which must match (AND);
- ``tag:VALUE``, ``split:VALUE`` and ``name:GLOB`` select on the asset's fields; ``*`` or
  ``all`` select everything.

The answer comes at once (its body is ignored by the reference client); the batch is built in the
background, one shard row when it is done, and one ``ingest-status`` webhook fires at the end
when a ``notificationsURL`` was given (categories are not supported there).
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rfbatch.emulator.core import EmulatorCore, core_of
from rfbatch.emulator.model import Shard, utcnow
from rfbatch.emulator.responses import Problem, ok
from rfbatch.emulator.sinks import store_blob
from rfbatch.samples import png_bytes

ROUTE = "/data-staging/v1/external/{workspace}/batches/{batch_id}/roboql-ingest"
_BATCH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_TAGS = ("cat", "dog", "car")
_SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Asset:
    name: str
    tag: str
    split: str
    seed: int


ASSET_LIBRARY: tuple[Asset, ...] = tuple(
    Asset(f"asset-{i:03d}.png", _TAGS[i % len(_TAGS)], _SPLITS[i % len(_SPLITS)], 7_000 + i)
    for i in range(12)
)


def select(query: str) -> list[Asset]:
    """The assets ``query`` selects; a term the language does not know is the caller's error."""
    terms = query.split()
    if not terms:
        raise Problem(400, "query must not be empty")
    chosen = list(ASSET_LIBRARY)
    for term in terms:
        if term in ("*", "all"):
            continue
        field_name, sep, value = term.partition(":")
        if not sep or field_name not in ("tag", "split", "name") or not value:
            raise Problem(400, f"unsupported RoboQL term {term!r} (tag:, split:, name: or *)")
        if field_name == "name":
            chosen = [a for a in chosen if fnmatch.fnmatchcase(a.name, value)]
        else:
            chosen = [a for a in chosen if getattr(a, field_name) == value]
    return chosen


async def roboql_ingest(request: web.Request) -> web.Response:
    # The key and workspace were checked by the shared middleware (faults.ROUTE_NAMES).
    core = core_of(request)
    batch_id = request.match_info["batch_id"]
    if not batch_id or len(batch_id) > 64 or not set(batch_id) <= _BATCH_CHARS:
        raise Problem(400, "batch id must match ^[a-z0-9_-]{1,64}$")
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "the body must be a JSON object") from None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise Problem(400, "the body must be a JSON object with a string query")
    assets = select(body["query"])
    existing = core.store.get(batch_id)
    if existing is not None and (
        existing.content_type != "images" or existing.upload_mode != "bulk"
    ):
        raise Problem(400, f"batch {batch_id!r} cannot take a RoboQL ingest")
    notifications_url = body.get("notificationsURL")
    ingest_id = body.get("ingestId") or str(uuid.uuid4())
    display_name = body.get("displayName")
    core.tasks.spawn(
        _build(core, batch_id, display_name, assets, str(ingest_id), notifications_url)
    )
    return ok({"ingestId": ingest_id})


async def _build(
    core: EmulatorCore,
    batch_id: str,
    display_name: Any,
    assets: list[Asset],
    ingest_id: str,
    notifications_url: Any,
) -> None:
    if core.config.ingest_delay > 0:
        await asyncio.sleep(core.config.ingest_delay)
    # Like a references ingest, the batch appears only once the service has worked on it.
    batch = core.store.get(batch_id) or core.store.create(
        batch_id,
        display_name=display_name if isinstance(display_name, str) else None,
        batch_type="sharded-batch",
        content_type="images",
        upload_mode="bulk",
    )
    shard_id = uuid.uuid4().hex
    for asset in assets:
        blob = store_blob(io.BytesIO(png_bytes(16, 16, asset.seed)), core.blob_dir)
        _, old = batch.put_item(
            name=asset.name, size=blob.size, sha256=blob.sha256, blob=blob.path, shard_id=shard_id
        )
        if old is not None:
            old.unlink(missing_ok=True)
    meta = {"ingestedFiles": len(assets), "query": "roboql"}
    batch.add_shard(Shard(shard_id, "roboql-ingested", "success", utcnow(), len(assets), meta))
    if isinstance(notifications_url, str) and notifications_url:
        core.webhooks.send(
            notifications_url,
            {
                "type": "roboflow-data-staging-notification-v1",
                "ingest_id": ingest_id,
                "batch_id": batch_id,
                "shard_id": None,
                "notification": {"type": "ingest-status-notification-v1", "success": True},
            },
        )


def add_routes(app: web.Application) -> None:
    app.router.add_post(ROUTE, roboql_ingest, name="roboql_ingest")
