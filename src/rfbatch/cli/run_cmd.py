"""``rfbatch run``: the long-running daemon."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import anyio
import typer

from rfbatch.app import open_services
from rfbatch.cli.common import EXIT_OK, EXIT_USAGE, fail, run, settings_from
from rfbatch.cli.options import ConfigOpt, LogFormatOpt, LogLevelOpt, check_sources
from rfbatch.cli.webhook import webhook_receiver
from rfbatch.errors import ConfigError
from rfbatch.pipeline.daemon import Daemon
from rfbatch.pipeline.upload_pass import source_specs


def run_daemon(
    config: ConfigOpt = None,
    source: Annotated[
        list[Path] | None, typer.Option("--source", help="A folder to watch (repeatable).")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where results are exported.")] = None,
    http_listen: Annotated[
        str | None, typer.Option(help="HOST:PORT of the health/metrics/webhook server.")
    ] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Watch folders and run upload, ingest, job and export continuously until SIGTERM."""
    settings = settings_from(
        config,
        {
            "daemon": {
                "sources": tuple(source) if source else None,
                "output_dir": output_dir,
                "http_listen": http_listen,
            }
        },
        log_level=log_level,
        log_format=log_format,
    )
    try:
        key = settings.api_key()
        sources = list(settings.daemon.sources)
        if not sources:
            raise ConfigError("no sources: set [daemon] sources or pass --source")
        check_sources(sources)
        if settings.daemon.output_dir is not None:
            settings.daemon.output_dir.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as exc:
        fail(str(exc), EXIT_USAGE)

    async def main() -> int:
        async with open_services(settings, source_roots=sources) as services:
            receiver = None
            hook = settings.webhook
            if hook.public_url and settings.daemon.http_listen:
                receiver = await webhook_receiver(
                    hook, services.client, services.manifest.record_event
                )
            daemon = Daemon(
                services,
                source_specs(services, [str(s) for s in sources]),
                receiver=receiver,
                job_notifications_url=hook.public_url if receiver else None,
            )
            async with anyio.create_task_group() as tg:

                async def on_signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            # First signal: drain. Second: stop now.
                            if daemon.draining:
                                daemon.abort()
                            else:
                                daemon.drain()

                tg.start_soon(on_signals)
                await daemon.run()
                tg.cancel_scope.cancel()
        return EXIT_OK

    run(main, key)
