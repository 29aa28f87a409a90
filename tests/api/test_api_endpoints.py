"""Every endpoint of contract sections 2 to 5, against the in-process emulator."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from aiohttp import web

from rfbatch.api import ClientConfig, RoboflowClient
from rfbatch.api.schemas import (
    ImageJobSpec,
    ImageReference,
    JobMetadata,
    RestartOverrides,
    VideoJobSpec,
)
from rfbatch.emulator import Emulator, EmulatorConfig
from rfbatch.errors import NotFoundError
from rfbatch.transfer import BytesBody, Transfer
from tests.api.stub import stub_server
from tests.api.support import client_config, image_bytes
from tests.conftest import emulator_config_with
from tests.tars import tar_of
from tests.waiting import wait_for


async def _counted(client: RoboflowClient, batch_id: str) -> int:
    """The batch's count; 0 while it does not exist yet (a batch appears once a shard is
    processed, on the strict emulator as plausibly on the real service)."""
    try:
        return await client.count(batch_id)
    except NotFoundError:
        return 0


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    # The reference tests serve their files from a plain-HTTP loopback server, which the strict
    # emulator (like the official client) refuses; nothing else here depends on the scheme.
    return emulator_config_with(tmp_path, allow_http_references=True)


async def upload_images(client: RoboflowClient, batch_id: str, count: int) -> dict[str, bytes]:
    sent: dict[str, bytes] = {}
    for i in range(count):
        name = f"img-{i:03d}.jpg"
        sent[name] = image_bytes(name)
        await client.upload_image(batch_id, name, sent[name], display_name="Camera A")
    return sent


async def finished_job(client: RoboflowClient, job_id: str) -> JobMetadata:
    async def ended() -> JobMetadata | None:
        job = await client.get_job(job_id)
        return job if job.terminal else None

    job = await wait_for(ended, f"job {job_id} to end")
    assert job is not None  # wait_for returns only a truthy value
    return job


async def test_workspace_is_looked_up_once(client: RoboflowClient, emulator: Emulator) -> None:
    assert await client.workspace() == emulator.config.workspace
    before = client.requests_sent
    assert await client.workspace() == emulator.config.workspace
    assert client.requests_sent == before


async def test_simple_batch_upload_metadata_count_and_listing(
    client: RoboflowClient, emulator: Emulator
) -> None:
    sent = await upload_images(client, "cams-a", 3)

    batch = await client.get_batch("cams-a")
    assert batch.batch_id == "cams-a"
    assert batch.display_name == "Camera A"
    assert batch.batch_type == "simple-batch"
    assert batch.batch_content_type == "images"
    assert batch.expiry_date > batch.created_date
    assert await client.count("cams-a") == 3

    files = await client.list_files("cams-a").collect()
    assert sorted(f.file_name for f in files) == sorted(sent)
    items = emulator.state()["batches"]["cams-a"]["items"]
    assert {i["name"]: i["size"] for i in items} == {n: len(d) for n, d in sent.items()}
    assert all(i["received"] == 1 for i in items)


async def test_every_listing_walks_many_small_pages(
    client: RoboflowClient, emulator: Emulator
) -> None:
    sent = await upload_images(client, "many", 7)
    for extra in ("other-1", "other-2"):
        await client.upload_image(extra, "x.jpg", b"x")

    pages = [p async for p in client.list_file_pages("many", page_size=2)]
    assert [len(p.items) for p in pages] == [2, 2, 2, 1]
    assert pages[-1].next_page_token is None
    names = [f.file_name for p in pages for f in p.items]
    assert sorted(names) == sorted(sent)
    assert len(set(names)) == 7

    batches = [b.batch_id async for b in client.list_batches(page_size=1)]
    assert sorted(batches) == ["many", "other-1", "other-2"]


async def test_video_upload_url_then_put(client: RoboflowClient, emulator: Emulator) -> None:
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    signed = await client.video_upload_url("vids", "clip.mp4", display_name="Videos")
    assert signed.upload_url.startswith(emulator.base_url)
    assert signed.extension_headers
    async with Transfer() as transfer:
        assert await transfer.put(signed, BytesBody(video)) == len(video)

    async def count() -> bool:
        return await _counted(client, "vids") == 1

    await wait_for(count, "video counted")
    batch = await client.get_batch("vids")
    assert batch.batch_content_type == "videos"
    item = emulator.state()["batches"]["vids"]["items"][0]
    assert (item["name"], item["size"]) == ("clip.mp4", len(video))

    await client.start_job(
        "job-vid", VideoJobSpec(batch_id="vids", workflow_id="wf", max_video_fps=2)
    )
    definition = (await client.get_job("job-vid")).job_definition
    assert definition["type"] == "simple-video-processing-v1"
    assert definition["processingSpecification"]["maxVideoFPS"] == 2


async def test_tar_shards_ingest_and_shard_listing(
    client: RoboflowClient, emulator: Emulator
) -> None:
    async with Transfer() as transfer:
        for shard in range(3):
            files = [(f"s{shard}-{i}.jpg", image_bytes(f"s{shard}-{i}")) for i in range(4)]
            signed = await client.shard_upload_url("bulk", display_name="Bulk")
            await transfer.put(signed, BytesBody(tar_of(files)))

    async def count() -> bool:
        return await _counted(client, "bulk") == 12

    await wait_for(count, "12 images ingested")
    shards = [s async for s in client.list_shards("bulk", page_size=1)]
    assert len(shards) == 3
    assert len({s.shard_id for s in shards}) == 3
    assert sum(s.shard_objects_count for s in shards) == 12
    assert not any(s.failed for s in shards)
    assert (await client.get_batch("bulk")).batch_type == "sharded-batch"


async def test_image_and_video_reference_ingest(client: RoboflowClient, emulator: Emulator) -> None:
    blobs = {f"ref-{i}.jpg": image_bytes(f"ref-{i}") for i in range(3)}
    blobs["movie.mp4"] = b"movie-bytes" * 50

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=blobs[request.path.lstrip("/")])

    async with stub_server(serve) as origin:
        refs = [ImageReference(name=n, url=f"{origin.base_url}/{n}") for n in blobs if ".jpg" in n]
        result = await client.ingest_image_references(
            "refs", refs, ingest_id="ingest-1", display_name="Refs"
        )
        assert result.ingest_id == "ingest-1"
        assert not result.duplicated
        again = await client.ingest_image_references("refs", refs, ingest_id="ingest-1")
        assert again.duplicated is True

        async def count() -> bool:
            return await _counted(client, "refs") == 3

        await wait_for(count, "references ingested")

        video = await client.ingest_video_references(
            "refvids", [ImageReference(name="movie.mp4", url=f"{origin.base_url}/movie.mp4")]
        )
        assert video.ingest_id

        async def video_count() -> bool:
            return await _counted(client, "refvids") == 1

        await wait_for(video_count, "video reference ingested")
    items = {i["name"]: i["size"] for i in emulator.state()["batches"]["refs"]["items"]}
    assert items == {n: len(d) for n, d in blobs.items() if n.endswith(".jpg")}


async def test_reference_ingest_from_a_jsonl_url(
    client: RoboflowClient, emulator: Emulator
) -> None:
    blobs = {f"u-{i}.jpg": image_bytes(f"u-{i}") for i in range(4)}
    base: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.path.lstrip("/")
        if name == "refs.jsonl":
            lines = [json.dumps({"name": n, "url": f"{base[0]}/{n}"}) for n in blobs]
            return web.Response(text="\n".join(lines))
        return web.Response(body=blobs[name])

    async with stub_server(serve) as origin:
        base.append(origin.base_url)
        result = await client.ingest_image_references(
            "refs-url", references_url=f"{origin.base_url}/refs.jsonl"
        )
        assert result.ingest_id

        async def count() -> bool:
            return await _counted(client, "refs-url") == 4

        await wait_for(count, "JSONL references ingested")
    assert any(r.path == "/refs.jsonl" for r in origin.requests)


async def test_job_lifecycle_stages_tasks_parts_outputs_and_logs(
    client: RoboflowClient, emulator: Emulator, tmp_path: Path
) -> None:
    sent = await upload_images(client, "job-in", 3)
    spec = ImageJobSpec(
        batch_id="job-in",
        workflow_id="detect",
        aggregation_format="jsonl",
        max_parallel_tasks=2,
        max_image_failure_rate=0.5,
    )
    await client.start_job("job-1", spec, name="First job")
    # Same id, same definition: idempotent.
    await client.start_job("job-1", spec, name="First job")

    job = await finished_job(client, "job-1")
    assert job.succeeded, job.last_notification
    assert job.name == "First job"
    assert job.job_definition["processingSpecification"]["workflowId"] == "detect"
    assert emulator.state()["jobs"]["job-1"]["state"] == "succeeded"

    listed = [j.job_id async for j in client.list_jobs(page_size=1)]
    assert listed == ["job-1"]

    stages = await client.list_stages("job-1")
    assert [s.processing_stage_name for s in stages] == ["processing", "export"]
    assert all(s.tasks_number >= 1 and not s.is_running for s in stages)
    tasks = [t async for t in client.list_tasks("job-1", stages[0].processing_stage_id, 1)]
    assert len(tasks) == stages[0].tasks_number
    assert all(t.progress == 1.0 and t.succeeded for t in tasks)

    output = stages[0].output_batches[0]
    parts = await client.list_parts(output)
    assert parts, "the processing stage has output parts"
    part = parts[0].part_name
    assert await client.count(output, part_name=part) >= 1
    results = await client.list_files(output, part_name=part).collect()
    assert results
    assert all(f.part_name in (None, part) for f in results)

    async with Transfer() as transfer:
        dest = tmp_path / "results.part"
        await transfer.download(results[0].download_url, dest)
    records = [json.loads(line) for line in dest.read_text().splitlines() if line.strip()]
    assert len(records) == len(sent)
    text = dest.read_text()
    assert all(name in text for name in sent)

    export = stages[1].output_batches[0]
    export_files = await client.list_files(export).collect()
    assert export_files
    assert all(f.file_name.endswith(".tar.gz") for f in export_files)
    async with Transfer() as transfer:
        archive = tmp_path / "export.tar.gz"
        await transfer.download(export_files[0].download_url, archive)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
        assert tar.getnames()

    logs = await client.job_logs("job-1", page_size=1).collect()
    assert logs
    assert all(entry.severity in ("info", "warning", "error") for entry in logs)
    infos = await client.job_logs("job-1", severity="info").collect()
    assert infos
    assert all(entry.severity == "info" for entry in infos)
    errors = await client.job_logs("job-1", severity="error").collect()
    assert all(entry.severity == "error" for entry in errors)


async def test_abort_and_restart_with_and_without_overrides(
    client: RoboflowClient, emulator: Emulator
) -> None:
    await upload_images(client, "abort-in", 1)
    await client.start_job("job-ab", ImageJobSpec(batch_id="abort-in", workflow_id="wf"))
    await client.start_job("job-fail", ImageJobSpec(batch_id="abort-in", workflow_id="fail-me"))

    answer = await client.abort_job("job-ab")
    assert isinstance(answer, dict)
    await client.abort_job("job-ab")  # idempotent
    aborted = await client.get_job("job-ab")
    assert aborted.failed
    assert emulator.state()["jobs"]["job-ab"]["state"] == "aborted"

    failed = await finished_job(client, "job-fail")
    assert failed.failed
    assert failed.last_notification

    await client.restart_job("job-ab")
    restarted = await client.get_job("job-ab")
    assert restarted.restart_parameters_override == []

    await client.restart_job("job-fail", RestartOverrides(max_parallel_tasks=3, machine_type="gpu"))
    job = await client.get_job("job-fail")
    assert job.restart_parameters_override[-1]["maxParallelTasks"] == 3
    assert job.restart_parameters_override[-1]["computeConfiguration"]["machineType"] == "gpu"


@pytest.mark.anyio
@pytest.mark.parametrize("with_overrides", [False, True])
async def test_restart_sends_no_body_without_overrides(with_overrides: bool) -> None:
    async with stub_server(_fake_api) as stub:
        config = _stub_config(stub.base_url)
        async with RoboflowClient(config) as c:
            overrides = RestartOverrides(max_parallel_tasks=2) if with_overrides else None
            await c.restart_job("job-x", overrides)
    restart = stub.requests[-1]
    assert restart.path == "/batch-processing/v1/external/ws/jobs/job-x/restart"
    if with_overrides:
        assert json.loads(restart.body) == {"type": "parameters-override-v1", "maxParallelTasks": 2}
        assert restart.headers["Content-Type"] == "application/json"
    else:
        assert restart.body == b""
        assert "Content-Type" not in restart.headers


async def test_wire_shape_of_uploads_and_job_start() -> None:
    async with stub_server(_fake_api) as stub, RoboflowClient(_stub_config(stub.base_url)) as c:
        await c.upload_image("b-1", "photo.jpg", b"JPEGDATA", display_name="Shown")
        await c.start_job("job-w", ImageJobSpec(batch_id="b-1", workflow_id="wf"), name="Nice name")
    workspace, upload, start = stub.requests
    assert workspace.path == "/"
    assert workspace.query == {"api_key": "stub-key"}
    assert upload.path == "/data-staging/v1/external/ws/batches/b-1/upload/image"
    assert upload.query == {"api_key": "stub-key", "fileName": "photo.jpg", "displayName": "Shown"}
    assert b'name="photo.jpg"; filename="photo.jpg"' in upload.body
    assert b"JPEGDATA" in upload.body
    assert start.query == {"api_key": "stub-key", "name": "Nice name"}
    assert json.loads(start.body)["processingSpecification"]["workspace"] == "ws"
    for request in stub.requests:
        assert not any("stub-key" in v for v in request.headers.values())


def _stub_config(base_url: str) -> ClientConfig:
    return client_config(base_url, "stub-key")


async def _fake_api(request: web.Request) -> web.StreamResponse:
    if request.path == "/":
        return web.json_response({"workspace": "ws"})
    return web.json_response({"status": "ok"})


async def _signed_urls(request: web.Request) -> web.StreamResponse:
    if request.path == "/":
        return web.json_response({"workspace": "ws"})
    if request.path.endswith("-references"):
        return web.json_response({"ingestId": "i-1"})
    if request.path.endswith("/upload/image"):
        return web.json_response({"status": "ok"})
    return web.json_response({"signedURLDetails": {"uploadURL": "http://127.0.0.1:9/u"}})


async def test_display_name_is_the_batch_id_unless_a_name_is_given() -> None:
    # What the official client sends on every call that takes a display name.
    async with stub_server(_signed_urls) as stub, RoboflowClient(_stub_config(stub.base_url)) as c:
        await c.shard_upload_url("cams-7")
        await c.video_upload_url("cams-7-videos", "a.mp4")
        await c.upload_image("cams-7", "p.jpg", b"JPEG")
        await c.ingest_image_references("refs-1", [ImageReference(name="r.jpg", url="https://x/r")])
        await c.shard_upload_url("cams-7", display_name="Cameras, week 7")
    shown = [r.query.get("displayName") for r in stub.requests[1:]]
    assert shown == ["cams-7", "cams-7-videos", "cams-7", "refs-1", "Cameras, week 7"]


async def test_a_references_ingest_sent_again_carries_the_same_ingest_id() -> None:
    # The first answer is lost (503): the POST goes again, and the service can tell it is the
    # same ingest. A RoboQL ingest gets an id the same way, and says which one it sent.
    answered: list[str] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        if request.path == "/":
            return web.json_response({"workspace": "ws"})
        answered.append(request.path)
        if request.path.endswith("-references") and len(answered) == 1:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"ingestId": "from-service"})

    refs = [ImageReference(name="r.jpg", url="https://x/r")]
    async with stub_server(flaky) as stub, RoboflowClient(_stub_config(stub.base_url)) as c:
        await c.ingest_image_references("refs-1", refs)
        await c.ingest_image_references("refs-1", [ImageReference(name="s.jpg", url="https://x/s")])
        sent = await c.ingest_roboql("q-1", "tag:cars")
    first, retried, other, roboql = [json.loads(r.body)["ingestId"] for r in stub.requests[1:]]
    assert first == retried
    assert first.startswith("rfbatch-")
    assert other != first
    assert roboql == sent
