"""Jobs: validation, idempotent start, 409, stages, tasks, outputs, failure, abort, restart."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rfbatch.emulator import EmulatorConfig, running_emulator
from tests.emulator.support import Api, Receiver, job_body
from tests.waiting import wait_for

IMAGES = {f"img-{n:03d}.jpg": f"image {n}".encode() * 10 for n in range(120)}


@pytest.fixture
async def slow_api() -> AsyncIterator[Api]:
    """Jobs that take long enough to be caught running (a tick of 0.4 s, 5+ ticks per job)."""
    config = EmulatorConfig(api_key="k", workspace="test-ws", job_tick=0.4)
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        yield Api(emu, session)


async def _input_batch(api: Api, batch: str = "in", images: dict[str, bytes] = IMAGES) -> None:
    await api.upload_tar(batch, images)
    await api.wait_count(batch, len(images))


async def test_start_is_idempotent_and_conflicts_on_another_body(api: Api) -> None:
    await _input_batch(api)
    body = job_body("in")
    first = await api.call("POST", api.bp("/jobs/job-1"), params={"name": "nightly"}, json=body)
    assert first.status == 200
    assert first.body["status"] == "ok"
    assert (await api.post(api.bp("/jobs/job-1"), body)).status == 200
    other = await api.post(api.bp("/jobs/job-1"), job_body("in", workflow="other"))
    assert other.status == 409
    assert "message" in other.body
    assert list(api.emu.state()["jobs"]) == ["job-1"]
    job = await api.job("job-1")
    assert job["name"] == "nightly"
    assert job["jobDefinition"] == body


@pytest.mark.parametrize(
    ("job_id", "mutate"),
    [
        ("ok-id", lambda b: b.pop("type")),
        ("ok-id", lambda b: b.update(type="simple-audio-processing-v1")),
        ("ok-id", lambda b: b.pop("jobInput")),
        ("ok-id", lambda b: b.pop("computeConfiguration")),
        ("ok-id", lambda b: b.pop("processingSpecification")),
        ("ok-id", lambda b: b.update(maxImageFailureRate=1.5)),
        ("ok-id", lambda b: b.update(maxImageFailureRate=-0.1)),
        ("ok-id", lambda b: b["jobInput"].update(batchId="missing")),
        ("ok-id", lambda b: b["jobInput"].update(batchId="empty")),
        ("ok-id", lambda b: b.update(notificationsUrl="")),
        ("ok-id", lambda b: b["processingSpecification"].pop("workflowId")),
        ("ok-id", lambda b: b["processingSpecification"].update(aggregationFormat="xml")),
        ("ok-id", lambda b: b.update(type="simple-video-processing-v1")),
        ("Bad_ID", lambda b: None),
        ("this-id-is-much-too-long", lambda b: None),
    ],
)
async def test_start_validates_the_body(api: Api, job_id: str, mutate: Any) -> None:
    await _input_batch(api, images={"a.jpg": b"a"})
    await api.shard_url("empty")
    body = job_body("in")
    mutate(body)
    reply = await api.post(api.bp(f"/jobs/{job_id}"), body)
    assert reply.status == 400, reply.body
    assert reply.body["message"]
    assert api.emu.state()["jobs"] == {}


async def test_rate_at_the_bounds_is_accepted(api: Api) -> None:
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/r0"), job_body("in", maxImageFailureRate=0))).status == 200
    assert (
        await api.post(api.bp("/jobs/r1"), job_body("in", maxImageFailureRate=1.0))
    ).status == 200


async def test_job_runs_both_stages_and_outputs_are_correct(api: Api, receiver: Receiver) -> None:
    await _input_batch(api)
    body = job_body("in", notificationsURL=receiver.url)
    assert (await api.post(api.bp("/jobs/full"), body)).status == 200
    job = await api.wait_terminal("full")
    assert (job["isTerminal"], job["error"]) == (True, False)
    assert job["plannedStages"] == ["processing", "export"]
    assert job["lastNotification"]["resultsBatches"] == ["full-export"]
    assert job["createdAt"].endswith("Z")
    assert job["lastUpdate"].endswith("Z")
    stages = (await api.get(api.bp("/jobs/full/stages"))).body["stages"]
    assert [s["processingStageId"] for s in stages] == ["processing", "export"]
    assert [s["outputBatches"] for s in stages] == [["full-processing"], ["full-export"]]
    assert stages[0]["tasksNumber"] == 2  # 120 items, 100 per task
    assert all(s["notification"] is not None and s["statusType"] == "success" for s in stages)
    assert api.emu.state()["jobs"]["full"]["outputBatches"] == ["full-processing", "full-export"]

    # processing batch: one JSONL record per input item, with the input's name
    meta = (await api.get(api.ds("/batches/full-processing"))).body["batch"]
    assert meta["batchType"] == "multipart-batch"
    parts = (await api.get(api.ds("/batches/full-processing/parts"))).body["batchParts"]
    assert [p["partName"] for p in parts] == ["results"]
    assert await api.count("full-processing", part="results") == 2
    records: list[dict[str, Any]] = []
    results: dict[str, bytes] = {}
    for entry in await api.list_all("full-processing", part="results"):
        assert entry["partName"] == "results"
        data = await api.download(entry["downloadURL"])
        results[entry["fileName"]] = data
        records += [json.loads(line) for line in data.splitlines()]
    assert sorted(r["file_name"] for r in records) == sorted(IMAGES)
    for record in records:
        assert record["sha256"] == hashlib.sha256(IMAGES[record["file_name"]]).hexdigest()
        assert record["predictions"][0]["class"]

    # export batch: .tar.gz archives holding exactly the results files
    exported: dict[str, bytes] = {}
    for entry in await api.list_all("full-export", part="results"):
        assert entry["fileName"].endswith(".tar.gz")
        archive = await api.download(entry["downloadURL"])
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                fh = tar.extractfile(member)
                assert fh is not None
                exported[member.name] = fh.read()
    assert exported == results

    await wait_for(lambda: receiver.received, "the job webhook")
    [hook] = receiver.received
    assert hook.headers["Authorization"] == "Bearer rf_test-ws"
    assert hook.body["type"] == "roboflow-batch-job-notification-v1"
    assert hook.body["job_id"] == "full"
    assert hook.body["job_state"] == "success"
    assert hook.body["delivery_attempt"] == 1


async def test_results_are_deterministic_and_csv_when_asked(api: Api) -> None:
    await _input_batch(api, images={"a.jpg": b"a", "b.jpg": b"b"})
    spec = {"aggregationFormat": "csv"}
    for job_id in ("csv-1", "csv-2"):
        assert (await api.post(api.bp(f"/jobs/{job_id}"), job_body("in", spec=spec))).status == 200
    outputs = []
    for job_id in ("csv-1", "csv-2"):
        await api.wait_terminal(job_id)
        [entry] = await api.list_all(f"{job_id}-processing", part="results")
        assert entry["fileName"].endswith(".csv")
        outputs.append(await api.download(entry["downloadURL"]))
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(io.StringIO(outputs[0].decode())))
    assert sorted(r["file_name"] for r in rows) == ["a.jpg", "b.jpg"]


async def test_tasks_progress_on_the_clock(slow_api: Api) -> None:
    api = slow_api
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/tick"), job_body("in"))).status == 200
    seen: list[float] = []

    async def progressed() -> bool:
        reply = await api.get(api.bp("/jobs/tick/stages/processing/tasks"))
        if reply.status != 200:
            return False
        assert "nextPageToken" in reply.body
        [task] = reply.body["tasks"]
        if task["progress"] is not None and (not seen or task["progress"] > seen[-1]):
            seen.append(task["progress"])
        return bool(task["statusType"] != "info")

    await wait_for(progressed, "the processing task to end")
    assert len(seen) >= 2
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


async def test_failing_workflow_hook(api: Api, receiver: Receiver) -> None:
    await _input_batch(api, images={"a.jpg": b"a"})
    body = job_body("in", workflow="fail-on-purpose", notificationsURL=receiver.url)
    assert (await api.post(api.bp("/jobs/doomed"), body)).status == 200
    job = await api.wait_terminal("doomed")
    assert (job["isTerminal"], job["error"]) == (True, True)
    assert "fail" in job["lastNotification"]["message"]
    stages = (await api.get(api.bp("/jobs/doomed/stages"))).body["stages"]
    assert "error" in stages[0]["statusType"]
    logs = (await api.get(api.bp("/jobs/doomed/logs"), severity="error")).body["logs"]
    assert logs
    assert all(entry["severity"] == "error" for entry in logs)
    await wait_for(lambda: receiver.received, "the job webhook")
    assert receiver.received[0].body["job_state"] == "fail"
    assert api.emu.state()["jobs"]["doomed"]["state"] == "failed"


async def test_abort_is_idempotent_and_restart_accumulates_overrides(slow_api: Api) -> None:
    api = slow_api
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/ab"), job_body("in"))).status == 200
    assert (await api.post(api.bp("/jobs/ab/restart"))).status == 400  # running jobs do not restart
    for _ in range(2):
        assert (await api.post(api.bp("/jobs/ab/abort"))).status == 200
    job = await api.job("ab")
    assert (job["isTerminal"], job["error"]) == (True, True)
    assert api.emu.state()["jobs"]["ab"]["state"] == "aborted"
    first = {"type": "parameters-override-v1", "maxParallelTasks": 2}
    assert (await api.post(api.bp("/jobs/ab/restart"), first)).status == 200
    assert api.emu.state()["jobs"]["ab"]["state"] == "running"
    assert (await api.post(api.bp("/jobs/ab/abort"))).status == 200
    second = {
        "type": "parameters-override-v1",
        "computeConfiguration": {"type": "compute-configuration-v2", "machineType": "gpu"},
        "maxImageFailureRate": 0.2,
    }
    assert (await api.post(api.bp("/jobs/ab/restart"), second)).status == 200
    job = await api.job("ab")
    assert job["restartParametersOverride"] == [first, second]
    job = await api.wait_terminal("ab")
    assert (job["isTerminal"], job["error"]) == (True, False)
    bad = await api.post(api.bp("/jobs/ab/restart"), {"type": "parameters-override-v1"})
    assert bad.status == 400  # succeeded jobs do not restart


async def test_restart_refuses_bad_overrides(api: Api) -> None:
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/rb"), job_body("in", workflow="fail-x"))).status == 200
    await api.wait_terminal("rb")
    bad = {"type": "parameters-override-v1", "maxImageFailureRate": 3}
    assert (await api.post(api.bp("/jobs/rb/restart"), bad)).status == 400
    assert (await api.post(api.bp("/jobs/rb/restart"), {"type": "other"})).status == 400


async def test_fail_job_hook_and_unknown_job(slow_api: Api) -> None:
    api = slow_api
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/hooked"), job_body("in"))).status == 200
    api.emu.fail_job("hooked", "disk on fire")
    job = await api.job("hooked")
    assert (job["isTerminal"], job["error"]) == (True, True)
    assert job["lastNotification"]["message"] == "disk on fire"
    assert (await api.get(api.bp("/jobs/nope"))).status == 404
    assert (await api.get(api.bp("/jobs/hooked/stages/nope/tasks"))).status == 404


async def test_logs_paginate_and_filter(api: Api) -> None:
    await _input_batch(api)
    assert (await api.post(api.bp("/jobs/lg"), job_body("in"))).status == 200
    await api.wait_terminal("lg")
    everything: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params = {"pageSize": "2"}
        if token:
            params["nextPageToken"] = token
        reply = await api.get(api.bp("/jobs/lg/logs"), **params)
        everything += reply.body["logs"]
        token = reply.body["nextPageToken"]
        if token is None:
            break
    assert len(everything) >= 6
    assert {e["severity"] for e in everything} == {"info"}
    assert all(e["createdAt"].endswith("Z") and e["payload"] is not None for e in everything)
    assert (await api.get(api.bp("/jobs/lg/logs"), severity="error")).body["logs"] == []
    assert (await api.get(api.bp("/jobs/lg/logs"), severity="loud")).status == 400


async def test_job_on_a_part_of_a_multipart_batch(api: Api) -> None:
    await _input_batch(api, images={"a.jpg": b"a"})
    assert (await api.post(api.bp("/jobs/first"), job_body("in"))).status == 200
    await api.wait_terminal("first")
    body = job_body("in")
    body["jobInput"] = {
        "type": "staging-batch-input-v1",
        "batchId": "first-processing",
        "partName": "results",
    }
    assert (await api.post(api.bp("/jobs/second"), body)).status == 200
    await api.wait_terminal("second")
    [entry] = await api.list_all("second-processing", part="results")
    [record] = [json.loads(x) for x in (await api.download(entry["downloadURL"])).splitlines()]
    assert record["file_name"] == "results-0000.jsonl"


async def test_video_job_over_a_video_batch(api: Api) -> None:
    reply = await api.post(api.ds("/batches/vb/upload/video"), fileName="clip.mp4")
    assert await api.put(reply.body["signedURLDetails"], b"video") == 200
    body = job_body("vb", type="simple-video-processing-v1", spec={"maxVideoFPS": 5})
    assert (await api.post(api.bp("/jobs/vj"), body)).status == 200
    job = await api.wait_terminal("vj")
    assert job["error"] is False
    # an image job on the video batch is refused
    assert (await api.post(api.bp("/jobs/vj2"), job_body("vb"))).status == 400


async def test_trt_compilation_job(api: Api) -> None:
    body = {
        "type": "trt-compilation-v1",
        "modelId": "my-model/3",
        "compilationDevices": ["nvidia-l4", "nvidia-t4"],
    }
    assert (await api.post(api.bp("/jobs/trt-1"), body)).status == 200
    job = await api.wait_terminal("trt-1")
    assert (job["error"], job["plannedStages"]) == (False, ["compilation"])
    stages = (await api.get(api.bp("/jobs/trt-1/stages"))).body["stages"]
    assert [(s["processingStageId"], s["tasksNumber"]) for s in stages] == [("compilation", 1)]
    bad = {**body, "compilationDevices": ["nvidia-h100"]}
    assert (await api.post(api.bp("/jobs/trt-2"), bad)).status == 400
