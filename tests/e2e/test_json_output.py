"""``--json``: rfbatch's own documents share one convention (snake_case, ``schema_version``), and
an error is a JSON document too, so a script reading stdout always gets one."""

from __future__ import annotations

import json
from pathlib import Path

from rfbatch.emulator import Emulator
from tests.e2e.support import cli_env, make_tree, run_cli


async def test_sync_reports_one_convention_with_the_time_of_each_phase(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "images"
    make_tree(src, 8)
    env = cli_env(emulator, tmp_path / "state")
    env["RFBATCH_JOB__POLL_SECONDS"] = "0.05"
    out = tmp_path / "results"

    done = await run_cli(
        ["sync", str(src), "--batch", "doc", "--workflow", "wf", "-o", str(out), "--json"], env
    )

    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["schema_version"] == 1
    assert list(report["phases"]) == ["upload", "confirm", "job", "export"]
    assert all(isinstance(s, float | int) and s >= 0 for s in report["phases"].values())
    assert report["upload"]["phases"].keys() == {"upload", "confirm"}
    [job] = report["jobs"]
    assert (job["batch_id"], job["state"], job["job"]["jobId"]) == (
        "doc",
        "succeeded",
        job["job_id"],
    )
    # The job's output batches exported one by one give the same document as sync's "export".
    exported = await run_cli(
        ["export", *job["output_batches"], "-o", str(tmp_path / "again"), "--json"], env
    )
    assert exported.returncode == 0, exported.stderr.decode()
    alone = json.loads(exported.stdout)
    assert alone["schema_version"] == 1
    assert alone.keys() - {"schema_version"} == report["export"].keys()
    snake = [k for k in _keys(report) if k != "job"]
    assert all(k == k.lower() for k in snake), snake

    human = await run_cli(
        ["sync", str(src), "--batch", "doc", "--workflow", "wf", "-o", str(out)], env
    )
    assert human.returncode == 0, human.stderr.decode()
    [times] = [line for line in human.stdout.decode().splitlines() if line.startswith("time: ")]
    assert all(f"{phase} " in times for phase in ("upload", "confirm", "job", "export", "total"))


def _keys(doc: object) -> list[str]:
    """Every key of rfbatch's own document, not descending into the service's objects."""
    if isinstance(doc, list):
        return [k for item in doc for k in _keys(item)]
    if not isinstance(doc, dict):
        return []
    return [k for k, v in doc.items() for k in [k, *([] if k == "job" else _keys(v))]]


async def test_in_json_mode_an_error_is_a_json_document_on_stdout(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = cli_env(emulator, tmp_path / "state")
    src = tmp_path / "src"
    make_tree(src, 1)

    bad_value = await run_cli(["upload", str(src), "--batch", "Not OK", "--json"], env)
    bad_usage = await run_cli(["upload", "--json", "--settle-seconds", "soon", str(src)], env)
    plain = await run_cli(["upload", str(src), "--batch", "Not OK"], env)

    for done, words in ((bad_value, "invalid batch id 'Not OK'"), (bad_usage, "--settle-seconds")):
        assert done.returncode == 2
        error = json.loads(done.stdout)
        assert error["schema_version"] == 1
        assert error["error"]["exit_code"] == 2
        assert words in error["error"]["message"]
        # The one line on stderr stays, for the operator.
        assert done.stderr.decode().startswith("rfbatch: error: ")
    assert (plain.returncode, plain.stdout) == (2, b"")
