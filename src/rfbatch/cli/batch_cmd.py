"""``rfbatch batch ...``: look at staging batches (API-shaped, each with ``--json``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from rfbatch.api import RoboflowClient
from rfbatch.cli.common import collect, reply
from rfbatch.cli.options import ConfigOpt, JsonOpt
from rfbatch.cli.render import table, wire_without_nulls

app = typer.Typer(help="Inspect staging batches.", no_args_is_help=True)

BatchArg = Annotated[str, typer.Argument(help="Batch id.")]
PartOpt = Annotated[
    str | None, typer.Option("--part", "--part-name", help="Part of a multipart batch.")
]
LimitOpt = Annotated[int | None, typer.Option(help="Stop after this many rows.")]


def _listing(
    config: Path | None,
    json_out: bool,
    columns: Sequence[str],
    source: Callable[[RoboflowClient], AsyncIterable[BaseModel]],
    limit: int | None,
) -> None:
    async def fetch(client: RoboflowClient) -> list[dict[str, Any]]:
        return await collect(source(client), limit, wire_without_nulls)

    reply(config, fetch, lambda rows: table(rows, columns), json_out=json_out)


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

    async def fetch(client: RoboflowClient) -> dict[str, Any]:
        return wire_without_nulls(await client.get_batch(batch))

    def show_fields(data: dict[str, Any]) -> None:
        for key, value in data.items():
            print(f"{key}: {value}")

    reply(config, fetch, show_fields, json_out=json_out)


@app.command()
def count(
    batch: BatchArg, part: PartOpt = None, json_out: JsonOpt = False, config: ConfigOpt = None
) -> None:
    """Print how many items the batch (or one part of it) holds."""

    async def fetch(client: RoboflowClient) -> int:
        return await client.count(batch, part_name=part)

    reply(
        config,
        fetch,
        print,
        json_out=json_out,
        as_json=lambda n: {"batchId": batch, "partName": part, "count": n},
    )


@app.command()
def parts(batch: BatchArg, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List the parts of a multipart (job output) batch."""

    async def fetch(client: RoboflowClient) -> list[dict[str, Any]]:
        return [wire_without_nulls(p) for p in await client.list_parts(batch)]

    columns = ["partName", "partType", "contentType", "nestedContentType"]
    reply(config, fetch, lambda rows: table(rows, columns), json_out=json_out)


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
