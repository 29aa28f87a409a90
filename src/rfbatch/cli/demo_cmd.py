"""``rfbatch demo``: the whole upload path against an in-process emulator; no key, no network."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_services
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, run, settings_from
from rfbatch.cli.upload_cmd import report
from rfbatch.obs.progress import upload_progress
from rfbatch.pipeline.tally import Tally
from rfbatch.pipeline.upload_pass import UploadTarget, source_specs, upload_and_confirm
from rfbatch.samples import write_images

DEMO_KEY = "demo-key-not-a-secret"
DEMO_BATCH = "rfbatch-demo"


def demo(
    images: Annotated[int, typer.Option(help="How many sample images to generate.")] = 1200,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep everything here (default: a temporary folder).")
    ] = None,
) -> None:
    """Generate sample images, upload them to an in-process emulator, and print the batch count."""
    from rfbatch.emulator import EmulatorConfig, running_emulator

    root = workdir or Path(tempfile.mkdtemp(prefix="rfbatch-demo-"))
    source = root / "images"
    print(f"demo folder: {root}")
    write_images(source, images, seed=7, min_bytes=20_000, max_bytes=120_000)
    print(f"generated {images} images in {source}")

    async def main() -> int:
        config = EmulatorConfig(api_key=DEMO_KEY, workspace="demo", state_dir=root / "emulator")
        async with running_emulator(config) as emu:
            print(f"emulator listening on {emu.base_url}")
            settings = settings_from(
                None,
                {
                    "api": {"key": DEMO_KEY, "base_url": emu.base_url},
                    "state": {"dir": root / "state"},
                    "scan": {"settle_seconds": 0.0},
                    "upload": {"ingest_poll_seconds": 0.2},
                },
                log_level="warning",
            )
            target = UploadTarget(image_batch=DEMO_BATCH, video_batch=f"{DEMO_BATCH}-videos")
            tally = Tally()
            async with open_services(settings, source_roots=[source]) as services:
                specs = source_specs(services, [str(source)])
                async with upload_progress(tally, enabled=sys.stderr.isatty()):
                    result = await upload_and_confirm(services, specs, target, tally=tally)
                report(result, json_out=False)
                count = await services.client.count(DEMO_BATCH)
        print(f"batch {DEMO_BATCH} count: {count}")
        return EXIT_OK if result.complete and count == images else EXIT_ITEMS_FAILED

    run(main, DEMO_KEY)
