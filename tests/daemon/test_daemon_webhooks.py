"""The daemon in-process with a webhook receiver: ingest notifications wake its confirmation."""

from __future__ import annotations

from pathlib import Path

import anyio

from rfbatch.app import open_services
from rfbatch.emulator import EmulatorConfig, running_emulator
from rfbatch.pipeline.daemon import Daemon
from rfbatch.pipeline.upload_pass import source_specs
from rfbatch.samples import png_bytes
from rfbatch.state.ledger import Ledger
from rfbatch.webhooks import InMemoryEvents, WebhookReceiver, serve_webhooks
from tests.conftest import API_KEY, WORKSPACE
from tests.e2e.support import settings_for
from tests.jobs.support import WEBHOOK_BEARER
from tests.waiting import wait_for

# Far longer than the test may take: a confirmation that waited for its next poll would time out.
SLOW_POLL = 3600.0


async def confirmed_batches(manifest: Ledger) -> list[str]:
    return [row.batch_id for row in await manifest.list_batches(states=["confirmed"])]


async def test_an_ingest_notification_confirms_the_batch_and_is_then_forgotten(
    tmp_path: Path,
) -> None:
    # The service indexes for a while, so the first count falls short and confirmation waits;
    # images over 1 KiB are rejected at ingest, so the notification names a failed file.
    emu_config = EmulatorConfig(
        api_key=API_KEY,
        workspace=WORKSPACE,
        state_dir=tmp_path / "emu",
        ingest_delay=2.0,
        max_image_bytes=1024,
    )
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"small-{i}.png").write_bytes(png_bytes(8, 8, i))
    (src / "large.png").write_bytes(png_bytes(8, 8, 99, pad_to=5000))
    receiver = WebhookReceiver(WEBHOOK_BEARER, 64 * 1024, InMemoryEvents())
    async with (
        running_emulator(emu_config) as emulator,
        serve_webhooks(receiver, "127.0.0.1", 0) as url,
    ):
        settings = settings_for(
            emulator,
            tmp_path / "state",
            scan={"settle_seconds": 0.1},
            upload={"ingest_poll_seconds": SLOW_POLL},
            daemon={
                "sources": [str(src)],
                "batch_window_seconds": 1.0,
                "shard_linger_seconds": 0.1,
                "lifecycle_poll_seconds": 0.1,
                "min_free_bytes": 0,
            },
        )
        async with open_services(settings, source_roots=[src]) as services:
            manifest = services.manifest
            specs = source_specs(services, [str(src)])
            daemon = Daemon(services, specs, receiver=receiver, job_notifications_url=url)
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                confirmed = await wait_for(
                    lambda: confirmed_batches(manifest), "a confirmed batch", interval=0.05
                )
                daemon.abort()
            (batch_id,) = confirmed
            skipped = [row async for row in manifest.files_in_state(["skipped"], batch_id)]
            ingested = [row async for row in manifest.files_in_state(["ingested"], batch_id)]
        # Notices for the batch that trail its confirmation are taken, and not kept either.
        await wait_for(
            lambda: emulator.state()["counters"]["webhooksSent"] == 2,
            'emulator.state()["counters"]["webhooksSent"] == 2',
        )
        assert receiver.statistics().batches_kept == 0

    assert receiver.statistics().accepted == 2  # one files-status, one ingest-status
    assert len(ingested) == 5
    assert [row.path.name for row in skipped] == ["large.png"]
    # The reason is the one the notification gave for that file.
    assert skipped[0].last_error == "rejected by the service at ingest (file-size-limit-exceeded)"
