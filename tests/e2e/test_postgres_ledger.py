"""``[state] url``: rfbatch keeps its ledger on PostgreSQL instead of SQLite (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from rfbatch.emulator import Emulator
from tests.e2e.support import cli_env, make_tree, received_digests, run_cli, sha


async def test_upload_records_in_postgres_and_a_rerun_sends_nothing(
    emulator: Emulator, tmp_path: Path, ledger_url: str
) -> None:
    files = make_tree(tmp_path / "src", 9)
    env = {**cli_env(emulator, tmp_path / "state"), "RFBATCH_STATE__URL": ledger_url}

    first = await run_cli(["upload", str(tmp_path / "src"), "--batch", "pg-1", "--json"], env)
    again = await run_cli(["upload", str(tmp_path / "src"), "--batch", "pg-1", "--json"], env)

    assert first.returncode == 0, first.stderr.decode()
    assert again.returncode == 0, again.stderr.decode()
    assert received_digests(emulator, "pg-1") == {sha(d): 1 for d in files.values()}
    assert json.loads(first.stdout)["files_sent"] == 9
    assert json.loads(again.stdout)["files_sent"] == 0
    conn = await asyncpg.connect(ledger_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) FROM files GROUP BY state")
        states = {str(r[0]): int(r[1]) for r in rows}
    finally:
        await conn.close()
    assert states == {"ingested": 9} or states == {"uploaded": 9}, states
    # Nothing went to SQLite.
    assert not (tmp_path / "state" / "manifest.sqlite3").exists()


async def test_config_check_masks_the_password_and_a_bad_url_stops_the_start(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = cli_env(emulator, tmp_path / "state")
    shown = await run_cli(
        ["config", "check"], {**env, "RFBATCH_STATE__URL": "postgresql://rf:s3cret@db:5432/l"}
    )
    bad = await run_cli(
        ["upload", str(tmp_path), "--batch", "x"], {**env, "RFBATCH_STATE__URL": "mysql://db/l"}
    )

    assert shown.returncode == 0, shown.stderr.decode()
    assert json.loads(shown.stdout)["state"]["url"] == "postgresql://db:5432/l"
    assert b"s3cret" not in shown.stdout + shown.stderr
    assert bad.returncode == 2
    [line] = bad.stderr.decode().strip().splitlines()
    assert "state.url" in line
    assert "postgresql://" in line


async def test_status_shows_the_fleet_and_the_backlog(
    emulator: Emulator, tmp_path: Path, ledger_url: str
) -> None:
    make_tree(tmp_path / "src", 5)
    env = {**cli_env(emulator, tmp_path / "state"), "RFBATCH_STATE__URL": ledger_url}
    sent = await run_cli(["upload", str(tmp_path / "src"), "--batch", "pg-s"], env)
    assert sent.returncode == 0, sent.stderr.decode()
    # No API key needed to look at the ledger.
    env.pop("ROBOFLOW_API_KEY")
    shown = await run_cli(["status", "--json"], env)
    human = await run_cli(["status"], env)

    assert shown.returncode == 0, shown.stderr.decode()
    doc = json.loads(shown.stdout)
    assert doc["shared"] is True
    assert "@" not in doc["ledger"] or "postgres@" in doc["ledger"]
    [upload_worker] = doc["workers"]  # the upload worked, then stopped cleanly
    assert upload_worker["stopped"] is True
    assert upload_worker["live"] is False
    assert doc["files"]["ingested"] + doc["files"]["uploaded"] == 5
    assert doc["unclaimed"] == 0
    assert human.returncode == 0, human.stderr.decode()
    text = human.stdout.decode()
    assert "shared by a fleet" in text
    assert "0 live" in text
    assert upload_worker["worker_id"] in text
    assert "stopped" in text


async def test_status_of_a_sqlite_ledger_is_a_fleet_of_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    make_tree(tmp_path / "src", 3)
    env = cli_env(emulator, tmp_path / "state")
    sent = await run_cli(["upload", str(tmp_path / "src"), "--batch", "sq-s"], env)
    assert sent.returncode == 0, sent.stderr.decode()
    shown = await run_cli(["status", "--json"], env)

    assert shown.returncode == 0, shown.stderr.decode()
    doc = json.loads(shown.stdout)
    assert doc["shared"] is False
    assert doc["workers"] == []
    assert doc["files"]["ingested"] + doc["files"]["uploaded"] == 3
    assert doc["ledger"] == str(tmp_path / "state")
