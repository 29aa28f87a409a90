"""The composition root: builds the client, the transfer session and the manifest from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rfbatch.api import ClientConfig, RetryPolicy, RoboflowClient
from rfbatch.settings import DOWNLOADS_START, UPLOADS_START, Settings
from rfbatch.state.fleet import Fleet, fleet_of
from rfbatch.state.ledger import Ledger
from rfbatch.state.manifest import SqliteManifest
from rfbatch.transfer import Transfer, TransferConfig
from rfbatch.transfer.adaptive import Concurrency


def retry_policy(settings: Settings) -> RetryPolicy:
    api = settings.api
    return RetryPolicy(
        attempts=api.retry_attempts,
        timeout=api.retry_timeout,
        wait_initial=api.retry_wait_initial,
        wait_max=api.retry_wait_max,
        wait_jitter=api.retry_wait_jitter,
        server_error_attempts=api.retry_server_error_attempts,
    )


def client_config(settings: Settings) -> ClientConfig:
    return ClientConfig(
        api_key=settings.api_key(),
        base_url=settings.api.base_url,
        connect_timeout=settings.api.connect_timeout,
        read_timeout=settings.api.read_timeout,
        retry=retry_policy(settings),
        max_concurrent_requests=settings.api.max_concurrent_requests,
        ca_bundle=settings.api.ca_bundle,
        max_response_bytes=settings.api.max_response_bytes,
    )


def transfer_config(settings: Settings) -> TransferConfig:
    return TransferConfig(
        connect_timeout=settings.api.connect_timeout,
        read_timeout=settings.api.read_timeout,
        retry=retry_policy(settings),
        write_chunk_size=settings.export.write_chunk_bytes,
        ca_bundle=settings.api.ca_bundle,
        upload_bytes_per_second=settings.upload.bytes_per_second,
        download_bytes_per_second=settings.export.bytes_per_second,
        puts=Concurrency(
            UPLOADS_START,
            settings.upload.shard_workers + settings.upload.video_workers,
            settings.upload.adaptive_concurrency,
        ),
        downloads=Concurrency(
            DOWNLOADS_START, settings.export.workers, settings.export.adaptive_concurrency
        ),
    )


@asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[RoboflowClient]:
    async with RoboflowClient(client_config(settings)) as client:
        yield client


@dataclass
class Services:
    """Everything a pipeline run talks to, opened together and closed together."""

    settings: Settings
    client: RoboflowClient
    transfer: Transfer
    manifest: Ledger
    fleet: Fleet = field(init=False)
    """How this worker shares the ledger (a fleet of one on SQLite): :mod:`rfbatch.state.fleet`."""

    def __post_init__(self) -> None:
        self.fleet = fleet_of(self.manifest)


async def open_ledger(
    settings: Settings, *, source_roots: Sequence[Path] = (), exclusive: bool = True
) -> Ledger:
    """The ledger the settings name: PostgreSQL at ``[state] url``, else SQLite in
    ``[state] dir`` (checked never to lie inside ``source_roots``). ``exclusive``: hold it
    against other workers (a webhook follower shares a daemon's)."""
    if settings.state.url is not None:
        from rfbatch.state.postgres import PostgresLedger  # only a fleet pays for asyncpg

        return await PostgresLedger.open(
            settings.state.url,
            exclusive=exclusive,
            worker_id=settings.state.worker_id,
            lease_seconds=settings.state.lease_seconds,
        )
    return await SqliteManifest.open(
        settings.state.dir, source_roots=source_roots, exclusive=exclusive
    )


@asynccontextmanager
async def open_services(
    settings: Settings, *, source_roots: Sequence[Path] = ()
) -> AsyncIterator[Services]:
    """Open everything; ``source_roots`` are checked never to contain the state directory."""
    config = client_config(settings)  # fails on a missing key before anything is opened
    async with (
        RoboflowClient(config) as client,
        Transfer(transfer_config(settings)) as transfer,
    ):
        manifest = await open_ledger(settings, source_roots=source_roots)
        try:
            yield Services(settings, client, transfer, manifest)
        finally:
            await manifest.close()
