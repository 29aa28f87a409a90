"""``rfbatch batch ...``: look at staging batches (API-shaped, each with ``--json``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from rfbatch.api import RoboflowClient
from rfbatch.cli.common import (
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    print_json,
    table,
    with_client,
)

app = typer.Typer(help="Inspect staging batches.", no_args_is_help=True)

BatchArg = Annotated[str, typer.Argument(help="Batch id.")]
PartOpt = Annotated[str | None, typer.Option("--part", help="Part of a multipart batch.")]
LimitOpt = Annotated[int | None, typer.Option(help="Stop after this many rows.")]


def _wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def _collect(items: AsyncIterable[BaseModel], limit: int | None) -> list[dict[str, Any]]:
    rows = []
    async for item in items:
        rows.append(_wire(item))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _listing(
    config: Any,
    json_out: bool,
    columns: Sequence[str],
    source: Callable[[RoboflowClient], AsyncIterable[BaseModel]],
    limit: int | None,
) -> None:
    async def body(client: RoboflowClient) -> int:
        rows = await _collect(source(client), limit)
        if json_out:
            print_json(rows)
        else:
            table(rows, columns)
        return EXIT_OK

    with_client(config, body)


@app.command("list")
def list_batches(
    json_out: JsonOpt = False, config: ConfigOpt = None, limit: LimitOpt = None
) -> None:
    """List the workspace's staging batches."""
    columns = [
        "batchId",
        "displayName",
        "batchType",
        "batchContentType",
        "createdDate",
        "expiryDate",
    ]
    _listing(config, json_out, columns, lambda c: c.list_batches(), limit)


@app.command()
def show(batch: BatchArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Show a batch's metadata."""

    async def body(client: RoboflowClient) -> int:
        data = _wire(await client.get_batch(batch))
        if json_out:
            print_json(data)
        else:
            for key, value in data.items():
                print(f"{key}: {value}")
        return EXIT_OK

    with_client(config, body)


@app.command()
def count(
    batch: BatchArg, part: PartOpt = None, json_out: JsonOpt = False, config: ConfigOpt = None
) -> None:
    """Print how many items the batch (or one part of it) holds."""

    async def body(client: RoboflowClient) -> int:
        n = await client.count(batch, part_name=part)
        if json_out:
            print_json({"batchId": batch, "partName": part, "count": n})
        else:
            print(n)
        return EXIT_OK

    with_client(config, body)


@app.command()
def parts(batch: BatchArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List the parts of a multipart (job output) batch."""

    async def body(client: RoboflowClient) -> int:
        rows = [_wire(p) for p in await client.list_parts(batch)]
        if json_out:
            print_json(rows)
        else:
            table(rows, ["partName", "partType", "contentType", "nestedContentType"])
        return EXIT_OK

    with_client(config, body)


@app.command()
def files(
    batch: BatchArg,
    part: PartOpt = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    limit: LimitOpt = None,
) -> None:
    """List a batch's files with their download URLs."""
    columns = ["fileName", "partName", "contentType", "downloadURL"]
    _listing(config, json_out, columns, lambda c: c.list_files(batch, part_name=part), limit)


@app.command()
def shards(
    batch: BatchArg, json_out: JsonOpt = False, config: ConfigOpt = None, limit: LimitOpt = None
) -> None:
    """List a batch's ingest shards and their status."""
    columns = ["shardId", "statusName", "statusType", "shardObjectsCount", "eventTimestamp"]
    _listing(config, json_out, columns, lambda c: c.list_shards(batch), limit)
