"""Records survive a restart on the same state_dir; a damaged state file never blocks a start."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from rfbatch.emulator import EmulatorConfig, running_emulator
from tests.emulator.support import Api, job_body


def _config(state_dir: Path, job_tick: float = 0.02, port: int = 0) -> EmulatorConfig:
    return EmulatorConfig(
        api_key="k", workspace="test-ws", state_dir=state_dir, job_tick=job_tick, port=port
    )


async def test_batches_and_jobs_survive_a_restart(tmp_path: Path) -> None:
    images = {f"{n}.jpg": bytes([n]) * (100 + n) for n in range(5)}
    async with running_emulator(_config(tmp_path)) as emu, aiohttp.ClientSession() as session:
        api = Api(emu, session)
        await api.upload_tar("kept", images)
        await api.wait_count("kept", 5)
        await api.upload_image("kept-simple", "solo.jpg", b"solo", field_name="file")
        assert (await api.post(api.bp("/jobs/done"), job_body("kept"))).status == 200
        await api.wait_terminal("done")
        old_url = (await api.list_all("kept"))[0]["downloadURL"]
        port = int(emu.base_url.rsplit(":", 1)[1])
    async with (
        running_emulator(_config(tmp_path, job_tick=60)) as emu,
        aiohttp.ClientSession() as s,
    ):
        api = Api(emu, s)
        # a job left running when the emulator stops...
        assert (await api.post(api.bp("/jobs/cut-off"), job_body("kept"))).status == 200
    (tmp_path / "blobs" / "stray").write_bytes(b"left by a PUT cut off by the stop")
    async with (
        running_emulator(_config(tmp_path, port=port)) as emu,
        aiohttp.ClientSession() as session,
    ):
        api = Api(emu, session)
        state = emu.state()
        assert state["batches"]["kept"]["count"] == 5
        assert state["batches"]["kept-simple"]["count"] == 1
        assert state["jobs"]["done"]["state"] == "succeeded"
        async with session.get(old_url) as resp:
            assert resp.status == 403  # URLs from an earlier run are refused like expired ones
        for entry in await api.list_all("kept"):
            assert await api.download(entry["downloadURL"]) == images[entry["fileName"]]
        stages = (await api.get(api.bp("/jobs/done/stages"))).body["stages"]
        assert [s["processingStageId"] for s in stages] == ["processing", "export"]
        [result] = await api.list_all("done-export", part="results")
        assert (await api.download(result["downloadURL"])).startswith(b"\x1f\x8b")
        # ...runs again from the start after the restart
        job = await api.wait_terminal("cut-off")
        assert job["error"] is False
        assert not (tmp_path / "blobs" / "stray").exists()
        # the same shard and job ids still behave as before
        assert (await api.post(api.bp("/jobs/done"), job_body("kept"))).status == 200
        assert (await api.post(api.bp("/jobs/done"), job_body("kept", workflow="x"))).status == 409


async def test_damaged_state_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"format": 1, "batches": [{"oops": true}]}')
    async with running_emulator(_config(tmp_path)) as emu, aiohttp.ClientSession() as session:
        assert emu.state()["batches"] == {}
        assert (await Api(emu, session).upload_image("fresh", "a.jpg", b"a")).status == 200
    assert [p.name.startswith("state.json.unreadable-") for p in tmp_path.glob("state.json.*")] == [
        True
    ]
    assert (tmp_path / "state.json").exists()
