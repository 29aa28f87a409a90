"""inference-cli `rf-cloud data-staging` commands against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

from compat.support import (
    WORKSPACE,
    Cli,
    Receiver,
    files_under,
    items_of,
    make_images,
    make_videos,
    sha256,
    wait_count,
)
from tests.waiting import wait_for_sync


def test_create_small_batch_of_images_uses_simple_upload(cli: Cli, tmp_path: Path) -> None:
    images = make_images(tmp_path / "small", 5)
    cli.run(
        "data-staging",
        "create-batch-of-images",
        "--images-dir",
        str(tmp_path / "small"),
        "--batch-id",
        "small-batch",
        "--batch-name",
        "Small Batch",
    )
    batch = cli.emulator.state()["batches"]["small-batch"]
    assert batch["batchType"] == "simple-batch"
    assert batch["displayName"] == "Small Batch"
    assert items_of(cli.emulator, "small-batch") == {n: sha256(d) for n, d in images.items()}
    assert all(item["received"] == 1 for item in batch["items"])


def test_create_large_batch_of_images_uses_shards_and_webhooks(
    cli: Cli, tmp_path: Path, receiver: Receiver
) -> None:
    images = make_images(tmp_path / "large", 40)
    cli.run(
        "data-staging",
        "create-batch-of-images",
        "--images-dir",
        str(tmp_path / "large"),
        "--batch-id",
        "large-batch",
        "--notifications-url",
        receiver.url,
        "--ingest-id",
        "ingest-large",
    )
    wait_count(cli.emulator, "large-batch", 40)
    batch = cli.emulator.state()["batches"]["large-batch"]
    assert batch["batchType"] == "sharded-batch"
    assert items_of(cli.emulator, "large-batch") == {n: sha256(d) for n, d in images.items()}
    assert sum(s["objects"] for s in batch["shards"]) == 40
    wait_for_sync(lambda: len(receiver.bodies()) >= 2, "the ingest webhooks")
    bodies = receiver.bodies()
    assert {b["ingest_id"] for b in bodies} == {"ingest-large"}
    files_status = [b for b in bodies if b["shard_id"] is not None]
    assert sorted(f for b in files_status for f in b["notification"]["ingested_files"]) == sorted(
        images
    )
    for headers, _ in receiver.received:
        assert headers["Authorization"] == f"Bearer rf_{WORKSPACE}"


def test_create_batch_of_videos(cli: Cli, tmp_path: Path, compat_python: Path) -> None:
    videos = make_videos(compat_python, tmp_path / "videos")
    cli.run(
        "data-staging",
        "create-batch-of-videos",
        "--videos-dir",
        str(tmp_path / "videos"),
        "--batch-id",
        "video-batch",
    )
    batch = cli.emulator.state()["batches"]["video-batch"]
    assert (batch["batchType"], batch["batchContentType"]) == ("simple-batch", "videos")
    assert items_of(cli.emulator, "video-batch") == {n: sha256(d) for n, d in videos.items()}


def test_create_batches_from_references_files(
    cli: Cli, tmp_path: Path, file_server: tuple[str, Path], compat_python: Path
) -> None:
    base, served = file_server
    images = make_images(served, 4, prefix="ref")
    refs = tmp_path / "image-refs.jsonl"
    refs.write_text("".join(json.dumps({"name": n, "url": f"{base}/{n}"}) + "\n" for n in images))
    proc = cli.run(
        "data-staging",
        "create-batch-of-images",
        "--data-source",
        "references-file",
        "--references",
        str(refs),
        "--batch-id",
        "ref-images",
    )
    assert "Your ingest ID" in proc.stdout
    wait_count(cli.emulator, "ref-images", 4)
    assert items_of(cli.emulator, "ref-images") == {n: sha256(d) for n, d in images.items()}

    videos = make_videos(compat_python, served / "videos")
    video_refs = tmp_path / "video-refs.jsonl"
    video_refs.write_text(
        "".join(json.dumps({"name": n, "url": f"{base}/videos/{n}"}) + "\n" for n in videos)
    )
    cli.run(
        "data-staging",
        "create-batch-of-videos",
        "--data-source",
        "references-file",
        "--references",
        str(video_refs),
        "--batch-id",
        "ref-videos",
    )
    wait_count(cli.emulator, "ref-videos", 2)
    assert items_of(cli.emulator, "ref-videos") == {n: sha256(d) for n, d in videos.items()}


def test_list_show_content_ingest_details_and_export(cli: Cli, tmp_path: Path) -> None:
    images = make_images(tmp_path / "src", 36)
    cli.run(
        "data-staging",
        "create-batch-of-images",
        "--images-dir",
        str(tmp_path / "src"),
        "--batch-id",
        "browse",
        "--batch-name",
        "Browse Me",
    )
    wait_count(cli.emulator, "browse", 36)

    listed = cli.run("data-staging", "list-batches", "--page-size", "5").stdout
    assert "browse" in listed

    details = cli.run("data-staging", "show-batch-details", "--batch-id", "browse").stdout
    assert "browse" in details
    assert "36" in details

    content_file = tmp_path / "content.jsonl"
    cli.run(
        "data-staging",
        "list-batch-content",
        "--batch-id",
        "browse",
        "--output-file",
        str(content_file),
    )
    entries = [json.loads(line) for line in content_file.read_text().splitlines() if line]
    assert sorted(e["file_name"] for e in entries) == sorted(images)
    assert all(e["download_url"].startswith(cli.emulator.base_url) for e in entries)

    shards_file = tmp_path / "shards.jsonl"
    cli.run(
        "data-staging",
        "list-ingest-details",
        "--batch-id",
        "browse",
        "--output-file",
        str(shards_file),
        "--page-size",
        "1",
    )
    shards = [json.loads(line) for line in shards_file.read_text().splitlines() if line]
    assert sum(s["shard_objects_count"] for s in shards) == 36
    # Status words are drawn per emulator (undocumented on the real service): no shard failed.
    assert all("error" not in s["status_type"] for s in shards)

    target = tmp_path / "export"
    cli.run("data-staging", "export-batch", "--batch-id", "browse", "--target-dir", str(target))
    assert files_under(target) == images
