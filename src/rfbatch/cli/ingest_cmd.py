"""``rfbatch ingest``: batches the service fills itself, from references or a RoboQL query.

Both send one request (references in chunks of 20,000 images, as the reference client does),
then wait for the batch to hold what was asked for; exit codes are those of every command.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Annotated, Any, cast

import typer

from rfbatch.api.schemas import NotificationCategory
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, fail, run, settings_from
from rfbatch.cli.options import ConfigOpt, JsonOpt, LogFormatOpt, LogLevelOpt
from rfbatch.cli.render import print_report
from rfbatch.errors import ConfigError
from rfbatch.ids import validate_batch_id
from rfbatch.pipeline.references import (
    IngestRequest,
    IngestWait,
    parse_source,
    send_references,
    wait_for_ingest,
)
from rfbatch.settings import Settings, split_host_port

app = typer.Typer(
    no_args_is_help=True,
    help="Fill a batch from URLs (references) or a RoboQL query, then wait for its ingest.",
)

BatchOpt = Annotated[str, typer.Option("--batch", help="Batch id.")]
IngestIdOpt = Annotated[
    str | None,
    typer.Option(help="Ingest id (default: one derived from the input, stable across reruns)."),
]
NotifyOpt = Annotated[
    str | None, typer.Option("--notifications-url", help="Where the service sends webhooks.")
]
DisplayOpt = Annotated[str | None, typer.Option(help="Batch display name (default: its id).")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Seconds to wait for the ingest.")
]
QuietOpt = Annotated[
    float,
    typer.Option(
        "--quiet-seconds",
        help="Stop waiting once the batch has not changed for this long.",
    ),
]
_CATEGORIES = ("ingest-status", "files-status")


def _wait_report(wait: IngestWait, ingest_ids: list[str], json_out: bool) -> int:
    body: dict[str, Any] = {
        "batch_id": wait.batch_id,
        "ingest_ids": ingest_ids,
        "expected": wait.expected,
        "count": wait.count,
        "confirmed": wait.confirmed,
        "missing": wait.missing,
        "reasons": wait.reasons,
        "seconds": wait.seconds,
    }
    if json_out:
        print_report(body)
    else:
        want = "" if wait.expected is None else f" of {wait.expected}"
        state = "confirmed" if wait.confirmed else "NOT confirmed"
        print(f"batch {wait.batch_id}: {wait.count}{want} files, {state} in {wait.seconds}s")
        for name in wait.missing:
            why = wait.reasons.get(name, "not in the batch listing")
            print(f"  not ingested: {name} ({why})")
    return EXIT_OK if wait.confirmed else EXIT_ITEMS_FAILED


def _settings(config: Any, log_level: str | None, log_format: str | None) -> tuple[Settings, str]:
    settings = settings_from(config, log_level=log_level, log_format=log_format)
    try:
        return settings, settings.api_key()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


@app.command("references")
def references(
    source: Annotated[
        str,
        typer.Argument(
            help="A local JSONL file of {name, url}, an https:// URL of one, or a cloud-storage "
            "path (s3://, gs://, az://) with an optional glob: its media objects, presigned."
        ),
    ],
    batch: BatchOpt,
    videos: Annotated[bool, typer.Option("--videos", help="The references are videos.")] = False,
    ingest_id: IngestIdOpt = None,
    notifications_url: NotifyOpt = None,
    category: Annotated[
        list[str] | None,
        typer.Option("--notification-category", help="ingest-status and/or files-status."),
    ] = None,
    display_name: DisplayOpt = None,
    timeout: TimeoutOpt = None,
    quiet_seconds: QuietOpt = 60.0,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Ask the service to fetch images (or videos) from URLs, then wait for their ingest."""
    settings, key = _settings(config, log_level, log_format)
    try:
        validate_batch_id(batch)
        chosen = set(category or ())
        unknown = chosen - set(_CATEGORIES)
        if unknown:
            raise ConfigError(f"unknown notification category {sorted(unknown)}: {_CATEGORIES}")
        scan = settings.scan
        parsed = parse_source(source, scan.video_extensions if videos else scan.image_extensions)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    request = IngestRequest(
        batch_id=batch,
        kind="video" if videos else "image",
        ingest_id=ingest_id,
        notifications_url=notifications_url,
        categories=tuple(cast(NotificationCategory, c) for c in _CATEGORIES if c in chosen),
        display_name=display_name,
    )
    names = [r.name for r in parsed.references] if parsed.references is not None else None
    hook = settings.webhook
    # With rfbatch's own receiver configured (and no URL of the user's), the service's
    # files-status notifications name each rejected file with its reason.
    own_hook = notifications_url is None and bool(hook.listen and hook.public_url)
    if own_hook:
        request = replace(
            request,
            notifications_url=hook.public_url,
            categories=("ingest-status", "files-status"),
        )
    from rfbatch.app import open_client  # the client stack is most of a start-up

    async def main() -> int:
        async with open_client(settings) as client, AsyncExitStack() as stack:
            receiver = None
            if own_hook and hook.listen is not None:
                from rfbatch.cli.webhook import webhook_receiver
                from rfbatch.webhooks import InMemoryEvents, serve_webhooks

                receiver = await webhook_receiver(hook, client, InMemoryEvents())
                host, port = split_host_port(hook.listen)
                await stack.enter_async_context(serve_webhooks(receiver, host, port))
            ids = await send_references(client, request, parsed)
            wait = await wait_for_ingest(
                client,
                batch,
                names,
                deadline_seconds=timeout or settings.upload.ingest_timeout_seconds,
                poll_interval=settings.upload.ingest_poll_seconds,
                quiet_seconds=quiet_seconds,
                receiver=receiver,
            )
        return _wait_report(wait, ids, json_out)

    run(main, key)


@app.command("roboql")
def roboql(
    query: Annotated[str, typer.Argument(help="The RoboQL query selecting Asset Library images.")],
    batch: BatchOpt,
    ingest_id: IngestIdOpt = None,
    notifications_url: NotifyOpt = None,
    display_name: DisplayOpt = None,
    timeout: TimeoutOpt = None,
    quiet_seconds: QuietOpt = 60.0,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Ask the service to build a batch from a RoboQL query, then wait until it is filled."""
    settings, key = _settings(config, log_level, log_format)
    try:
        validate_batch_id(batch)
        if not query.strip():
            raise ConfigError("the query must not be empty")
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    from rfbatch.app import open_client

    async def main() -> int:
        async with open_client(settings) as client:
            sent_id = await client.ingest_roboql(
                batch,
                query,
                ingest_id=ingest_id,
                notifications_url=notifications_url,
                display_name=display_name or batch,
            )
            wait = await wait_for_ingest(
                client,
                batch,
                None,
                deadline_seconds=timeout or settings.upload.ingest_timeout_seconds,
                poll_interval=settings.upload.ingest_poll_seconds,
                quiet_seconds=quiet_seconds,
            )
        return _wait_report(wait, [sent_id], json_out)

    run(main, key)
