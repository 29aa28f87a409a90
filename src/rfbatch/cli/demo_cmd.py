"""``rfbatch demo``: the whole loop against an in-process emulator; no key, no network.

It generates sample images and two small clips, then runs exactly what ``rfbatch sync`` runs:
upload (streamed tar shards and videos), ingest confirmation, a workflow job per batch, and the
export of the job results, and prints where they landed.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.app import open_services
from rfbatch.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, run, settings_from
from rfbatch.cli.render import sync_report
from rfbatch.obs.progress import upload_progress
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.sync import sync
from rfbatch.pipeline.upload_pass import UploadTarget, source_specs
from rfbatch.samples import write_images

DEMO_KEY = "demo-key-not-a-secret"
DEMO_BATCH = "rfbatch-demo"


def demo(
    images: Annotated[int, typer.Option(help="How many sample images to generate.")] = 1200,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep everything here (default: a temporary folder).")
    ] = None,
) -> None:
    """Run the whole loop (upload, ingest, job, export) against an in-process emulator."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="rfbatch-demo-") as tmp:
            _demo(Path(tmp), images, keep=False)
    else:
        _demo(workdir, images, keep=True)


def _demo(root: Path, images: int, *, keep: bool) -> None:
    from rfbatch.emulator import EmulatorConfig, running_emulator

    source = root / "media"
    output = root / "results"
    write_images(source / "images", images, seed=7, min_bytes=20_000, max_bytes=120_000)
    rng = random.Random(7)
    (source / "clips").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (source / "clips" / f"camera-{i}.mp4").write_bytes(rng.randbytes(2_000_000))
    print(f"generated {images} images and 2 clips in {source}")

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
                    "job": {"workflow_id": "demo-workflow", "poll_seconds": 0.2},
                },
                log_level="warning",
            )
            target = UploadTarget(image_batch=DEMO_BATCH, video_batch=f"{DEMO_BATCH}-videos")
            tally = Tally()
            async with open_services(settings, source_roots=[source]) as services:
                specs = source_specs(services, [str(source)])
                async with upload_progress(tally, enabled=True):
                    result = await sync(services, specs, target, output_dir=output, tally=tally)
        sync_report(result, json_out=False)
        files = sum(1 for p in output.rglob("*") if p.is_file())
        kept = "" if keep else " (a temporary folder, removed now: pass --workdir DIR to keep it)"
        print(f"{files} result files in {output}{kept}")
        return EXIT_OK if result.complete else EXIT_ITEMS_FAILED

    run(main, DEMO_KEY)
