"""Small edges an operator meets on the first day (issue 12)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rfbatch.emulator import Emulator
from rfbatch.state.manifest import DB_NAME
from tests.disks import small_disk
from tests.e2e.support import cli_env, make_tree, run_cli


async def test_dry_run_needs_no_api_key(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 5)
    env = cli_env(emulator, tmp_path / "state")
    del env["ROBOFLOW_API_KEY"]
    env["API_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens there: nothing may be asked

    done = await run_cli(["upload", str(src), "--batch", "dry", "--dry-run", "--json"], env)

    assert done.returncode == 0, done.stderr.decode()
    listing = json.loads(done.stdout)
    assert listing["count"] == 5
    assert listing["bytes"] == sum(len(d) for d in files.values())


@pytest.mark.parametrize(
    ("key", "section"),
    [
        ("daemon.move_to", 'after_ingest = "move"\nmove_to = "{src}/done"'),
        ("daemon.output_dir", 'output_dir = "{src}/results"'),
        ("state.dir", None),
    ],
)
async def test_paths_written_inside_a_source_are_refused_before_any_work(
    emulator: Emulator, tmp_path: Path, key: str, section: str | None
) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    state = src / "state" if key == "state.dir" else tmp_path / "state"
    daemon = f'[daemon]\nsources = ["{src}"]\nhttp_listen = ""\n'
    if section:
        daemon += section.format(src=src) + "\n"
    config = tmp_path / "c.toml"
    config.write_text(daemon + f'[state]\ndir = "{state}"\n')
    env = cli_env(emulator, state)
    del env["RFBATCH_STATE__DIR"]

    for command in (["config", "check", "-c", str(config)], ["run", "-c", str(config)]):
        done = await run_cli(command, env)
        err = done.stderr.decode().strip()
        assert done.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert key in err
        assert f"inside source {src}" in err
    assert emulator.state()["batches"] == {}


def _faulty_folder(folder: Path, fault: str) -> Iterator[Path]:
    """``folder`` with ``fault`` ("a file" in its place, "read-only", or "full": a disk too
    small for a database's first pages), as a generator for ExitStack-free use in one test."""
    if fault == "a file":
        folder.write_bytes(b"not a folder")
        yield folder
    elif fault == "read-only":
        with small_disk(folder, "1m", read_only=True):
            yield folder
    else:
        assert fault == "full", fault
        with small_disk(folder, "4k"):
            (folder / "filler").write_bytes(b"x" * 4096)
            yield folder


def _state_fault(tmp_path: Path, fault: str) -> Iterator[Path]:
    """A state directory with ``fault``: one of :func:`_faulty_folder`'s, or "damaged"."""
    state = tmp_path / "state"
    if fault == "damaged":
        state.mkdir()
        (state / DB_NAME).write_bytes(b"this is not a database " * 64)
        yield state
    else:
        yield from _faulty_folder(state, fault)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("a file", "is a file, not a directory"),
        ("damaged", "is damaged"),
        ("read-only", "cannot be used"),
        ("full", "disk is full"),
    ],
)
async def test_an_unusable_state_directory_is_one_line_and_exit_2(
    emulator: Emulator, tmp_path: Path, fault: str, says: str
) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    for state in _state_fault(tmp_path, fault):
        env = cli_env(emulator, state)
        done = await run_cli(["upload", str(src), "--batch", "state-faults"], env)
        err = done.stderr.decode().strip()
        assert done.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert str(state) in err
        assert says in err
        if fault == "damaged":
            assert "move it aside" in err
    assert "state-faults" not in emulator.state()["batches"]


async def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('[daemon]\nbatch_prefix = "caf\u00e9"\n'.encode("latin-1"))

    done = await run_cli(["config", "check", "-c", str(config)], {"PATH": "/usr/bin"})

    err = done.stderr.decode().strip()
    assert done.returncode == 2, err
    at = config.read_bytes().index(b"\xe9")
    assert err.splitlines() == [
        f"rfbatch: error: config file {config} is not UTF-8 text (byte {at}): save it as UTF-8"
    ]


async def test_an_unreachable_api_stops_upload_with_one_line_and_exit_3(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 40)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = cli_env(emulator, tmp_path / "state")
    env["API_BASE_URL"] = f"http://127.0.0.1:{port}"  # nothing listens there any more
    env["RFBATCH_API__RETRY_TIMEOUT"] = "2"
    env["RFBATCH_LOG__LEVEL"] = "error"

    done = await run_cli(["upload", str(src), "--batch", "offline"], env)

    assert done.returncode == 3, done.stderr.decode()
    assert done.stdout.decode() == ""  # no "failed <file>" line per file
    errors = [line for line in done.stderr.decode().splitlines() if "rfbatch: error:" in line]
    assert len(errors) == 1
    assert f"the API at http://127.0.0.1:{port} cannot be reached" in errors[0]


async def test_a_pasted_key_is_trimmed_and_a_broken_one_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    env = cli_env(emulator, tmp_path / "state")
    good = env["ROBOFLOW_API_KEY"]
    env["ROBOFLOW_API_KEY"] = f"  {good}\n"
    trimmed = await run_cli(["upload", str(src), "--batch", "pasted"], env)
    assert trimmed.returncode == 0, trimmed.stderr.decode()

    env["ROBOFLOW_API_KEY"] = f"{good[:5]} {good[5:]}"
    broken = await run_cli(["upload", str(src), "--batch", "pasted"], env)
    err = broken.stderr.decode().strip()
    assert broken.returncode == 2, err
    assert err.splitlines() == [
        f"rfbatch: error: the API key holds a space at position 6 of {len(good) + 1}: "
        "check how it was copied into ROBOFLOW_API_KEY, RFBATCH_API__KEY or [api] key in the config"
    ]


async def test_an_unknown_rfbatch_variable_is_named_with_the_closest_setting(
    tmp_path: Path,
) -> None:
    env = {"PATH": "/usr/bin", "RFBATCH_UPLOAD_SHARD_MAX_FILES": "50"}  # one "_" short

    done = await run_cli(["config", "check"], env)

    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().splitlines()[0] == (
        "rfbatch: warning: RFBATCH_UPLOAD_SHARD_MAX_FILES is not a setting and is ignored "
        "(did you mean RFBATCH_UPLOAD__SHARD_MAX_FILES?)"
    )
    assert not [line for line in done.stderr.decode().splitlines() if "warning" in line][1:]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["job", "start", "--batch", "b", "--workflow", "w", "--machine-type", "xpu"],
         "--machine-type"),
        (["job", "start", "--batch", "b", "--workflow", "w", "--workers-per-machine", "999"],
         "--workers-per-machine"),
        (["job", "start", "--batch", "b", "--workflow", "w", "--max-image-failure-rate", "2"],
         "--max-image-failure-rate"),
        (["upload", "{src}", "--batch", "b", "--shard-workers", "0"], "--shard-workers"),
        (["upload", "{src}", "--batch", "b", "--settle-seconds", "-1"], "--settle-seconds"),
    ],
)  # fmt: skip
async def test_a_bad_flag_value_is_named_by_its_flag(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    env = {
        "PATH": "/usr/bin",
        "ROBOFLOW_API_KEY": "abcdefghijkl",
        "API_BASE_URL": "http://127.0.0.1:9",
    }
    env["RFBATCH_STATE__DIR"] = str(tmp_path / "state")

    done = await run_cli([a.format(src=src) for a in args], env)

    assert done.returncode == 2, done.stderr.decode()
    assert f"Invalid value for '{flag}'" in done.stderr.decode()


async def test_a_folder_of_unsupported_files_says_what_was_ignored_and_exits_0(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("scan.tif", "clip.gif", "photo.heic"):
        (src / name).write_bytes(b"not sent")
    env = cli_env(emulator, tmp_path / "state")

    human = await run_cli(["upload", str(src), "--batch", "unsupported"], env)
    as_json = await run_cli(["upload", str(src), "--batch", "unsupported", "--json"], env)

    assert human.returncode == 0, human.stderr.decode()  # nothing to do is not a failure
    out = human.stdout.decode()
    assert "no media files found: 3 other files ignored" in out
    assert "image_extensions" in out
    assert as_json.returncode == 0
    summary = json.loads(as_json.stdout)
    assert summary["files_ignored"] == 3
    assert summary["files_sent"] == 0


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("a file", "exists and is not a folder"),
        ("read-only", "cannot be written"),
        ("full", "cannot be written"),
    ],
)
async def test_sync_checks_its_output_before_any_upload(
    emulator: Emulator, tmp_path: Path, fault: str, says: str
) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    env = cli_env(emulator, tmp_path / "state")
    for out in _faulty_folder(tmp_path / "results", fault):
        done = await run_cli(
            ["sync", str(src), "--batch", "early", "--workflow", "wf", "--output", str(out)], env
        )
        err = done.stderr.decode().strip()
        assert done.returncode == 2, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"rfbatch: error: output {out} {says}"), err
    assert emulator.state()["batches"] == {}  # nothing was uploaded, no job was started
    assert emulator.state()["jobs"] == {}
