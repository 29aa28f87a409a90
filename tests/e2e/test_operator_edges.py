"""Small edges an operator meets on the first day (issue 12)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rfbatch.emulator import Emulator, running_emulator
from rfbatch.emulator.faults import FaultProfile, FaultRates
from rfbatch.state.manifest import DB_NAME
from tests.conftest import emulator_config_with
from tests.disks import small_disk
from tests.e2e.support import batch_items, cli_env, make_tree, run_cli
from tests.waiting import wait_for


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


async def test_sync_refuses_an_output_inside_a_source(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    env = cli_env(emulator, tmp_path / "state")
    # Nested deeper, and through a link: the real path is what counts.
    (tmp_path / "link").symlink_to(src)
    for out in (src / "results", src / "cam0" / "results", tmp_path / "link" / "results", src):
        done = await run_cli(
            ["sync", str(src), "--batch", "inside", "--workflow", "wf", "--output", str(out)], env
        )
        err = done.stderr.decode().strip()
        assert done.returncode == 2, err
        assert err.splitlines() == [
            f"rfbatch: error: --output {out} is inside source {src}: what rfbatch writes there "
            "would be uploaded again"
        ]
        assert not (src / "results").exists()
    assert emulator.state()["batches"] == {}
    assert emulator.state()["jobs"] == {}


README = Path(__file__).resolve().parents[2] / "README.md"


def _documented(code: int) -> str:
    """The row of the README's exit-code table for ``code``."""
    rows = [row for row in README.read_text().splitlines() if row.startswith(f"| {code} |")]
    assert len(rows) == 1, rows
    return rows[0]


async def test_an_unknown_job_or_batch_is_one_line_and_the_documented_exit_code(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = cli_env(emulator, tmp_path / "state")
    asked = {
        "job 'nosuchjob' not found": ["job", "status", "nosuchjob"],
        "batch 'nosuchbatch' not found": ["batch", "show", "nosuchbatch"],
        "batch 'nosuch-export' not found": ["export", "nosuch-export", "-o", str(tmp_path / "o")],
    }
    for says, args in asked.items():
        done = await run_cli(args, env)
        err = done.stderr.decode().strip()
        assert done.returncode == 3, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("rfbatch: error: HTTP 404: "), err
        assert says in err
    assert "unknown batch or job" in _documented(3)


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


async def test_an_api_gone_mid_upload_stops_with_one_line_and_exit_3(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 240, size=500)
    # Every PUT waits a second before it is taken: the upload is under way, shards in flight,
    # when the API goes away (the site closes at once; what is in flight is let finish).
    faults = FaultProfile(routes={"put": FaultRates(slow=1.0)}, slow_seconds=1.0)
    shard_workers = 4
    done: list[subprocess.CompletedProcess[bytes]] = []
    config = emulator_config_with(tmp_path, faults=faults)
    # The emulator stops first, then the task group waits for the upload to end without it.
    async with anyio.create_task_group() as tg, running_emulator(config) as emulator:
        env = cli_env(emulator, tmp_path / "state")
        env.update(
            RFBATCH_API__RETRY_TIMEOUT="2",
            RFBATCH_UPLOAD__SHARD_MAX_FILES="4",  # 60 shards
            RFBATCH_UPLOAD__SHARD_WORKERS=str(shard_workers),
        )
        args = ["upload", str(src), "--batch", "outage"]

        async def upload() -> None:
            done.append(await run_cli(args, env))

        tg.start_soon(upload)
        await wait_for(lambda: batch_items(emulator, "outage"), "a first shard to arrive")
    assert 0 < len(batch_items(emulator, "outage")) < 240  # it went away mid-upload
    [run] = done
    err = run.stderr.decode()
    assert run.returncode == 3, err
    assert run.stdout.decode() == ""  # no "failed <file>" line per file
    errors = [line for line in err.splitlines() if line.startswith("rfbatch: error:")]
    assert len(errors) == 1, err
    assert f"the API at {emulator.base_url} cannot be reached" in errors[0]
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "upload.failed"]
    assert len(failed) <= shard_workers, failed  # at most one per shard in flight
    assert sum(e["files"] for e in failed) <= shard_workers * 4


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


def _invalid(flag: str) -> str:
    return f"Invalid value for '{flag}'"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["job", "start", "--batch", "b", "--workflow", "w", "--machine-type", "xpu"],
         _invalid("--machine-type")),
        (["job", "start", "--batch", "b", "--workflow", "w", "--workers-per-machine", "999"],
         _invalid("--workers-per-machine")),
        (["job", "start", "--batch", "b", "--workflow", "w", "--max-image-failure-rate", "2"],
         _invalid("--max-image-failure-rate")),
        (["upload", "{src}", "--batch", "b", "--shard-workers", "0"], _invalid("--shard-workers")),
        (["upload", "{src}", "--batch", "b", "--shard-workers", "65"], _invalid("--shard-workers")),
        (["upload", "{src}", "--batch", "b", "--settle-seconds", "-1"],
         _invalid("--settle-seconds")),
        (["export", "b", "-o", "{out}", "--workers", "0"], _invalid("--workers")),
        (["export", "b", "-o", "{out}", "--workers", "1000"], _invalid("--workers")),
        (["sync", "{src}", "--workflow", "w", "-o", "{out}", "--max-video-fps", "-3"],
         _invalid("--max-video-fps")),
        (["job", "start", "--batch", "b", "--videos", "--workflow", "w", "--max-video-fps", "0"],
         _invalid("--max-video-fps")),
        (["sync", "{src}", "--webhook-listen", "nonsense"], _invalid("--webhook-listen")),
        # Right values for the other kind of job: one line naming the flag.
        (["job", "start", "--batch", "b", "--workflow", "w", "--max-video-fps", "5"],
         "rfbatch: error: --max-video-fps applies to video jobs only (add --videos)"),
        (["job", "start", "--batch", "b", "--videos", "--workflow", "w",
          "--max-image-failure-rate", "0.1"],
         "rfbatch: error: --max-image-failure-rate applies to image jobs only, not --videos"),
    ],
)  # fmt: skip
async def test_a_bad_flag_value_is_named_by_its_flag(
    tmp_path: Path, args: list[str], says: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    env = {
        "PATH": "/usr/bin",
        "ROBOFLOW_API_KEY": "abcdefghijkl",
        "API_BASE_URL": "http://127.0.0.1:9",
    }
    env["RFBATCH_STATE__DIR"] = str(tmp_path / "state")

    done = await run_cli([a.format(src=src, out=tmp_path / "out") for a in args], env)

    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert says in err
    assert "invalid config" not in err  # never the config key behind the flag
    if says.startswith("rfbatch: error:"):
        assert err.strip() == says


async def test_a_busy_webhook_listen_is_named_by_its_flag(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    env = cli_env(emulator, tmp_path / "state")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        listen = ["--webhook-listen", f"127.0.0.1:{port}"]
        runs = [
            ["sync", str(src), "--batch", "busy", *listen],
            ["job", "wait", "some-job", *listen],
        ]
        for args in runs:
            done = await run_cli(args, env)
            err = done.stderr.decode().strip()
            assert done.returncode == 2, err
            assert len(err.splitlines()) == 1, err
            assert err.startswith(f"rfbatch: error: cannot listen on 127.0.0.1:{port} "), err
            assert "(--webhook-listen)" in err
    assert emulator.state()["batches"] == {}


async def test_a_folder_of_unsupported_files_says_what_was_ignored_and_exits_0(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("scan.tif", "clip.gif", "photo.heic", "frame.png.part", "~draft.jpg"):
        (src / name).write_bytes(b"not sent")
    env = cli_env(emulator, tmp_path / "state")

    human = await run_cli(["upload", str(src), "--batch", "unsupported"], env)
    as_json = await run_cli(["upload", str(src), "--batch", "unsupported", "--json"], env)

    assert human.returncode == 0, human.stderr.decode()  # nothing to do is not a failure
    [line] = [li for li in human.stdout.decode().splitlines() if "ignored" in li]
    # The count split by reason, and the types that are sent, named.
    assert line.startswith("no media files found: 5 other files ignored: 3 not of a type "), line
    assert line.endswith(", 2 matched by [scan] ignore_names"), line
    images = "images: .bmp .dib .jp2 .jpe .jpeg .jpg .png .webp"
    videos = "videos: .3gp .avi .flv .m4v .mkv .mov .mp4 .mpeg .mpg .ogg .webm .wmv"
    assert f"({images}; {videos}; [scan] image_extensions and video_extensions)" in line
    assert as_json.returncode == 0
    summary = json.loads(as_json.stdout)
    assert summary["files_ignored"] == 5
    assert (summary["files_ignored_by_type"], summary["files_ignored_by_name"]) == (3, 2)
    assert summary["files_sent"] == 0

    # The types named are the configured ones; a reason with no file is not mentioned.
    env["RFBATCH_SCAN__IMAGE_EXTENSIONS"] = '["PNG", ".webp"]'
    (src / "frame.png.part").unlink()
    (src / "~draft.jpg").unlink()
    configured = await run_cli(["upload", str(src), "--batch", "unsupported"], env)
    out = configured.stdout.decode()
    assert configured.returncode == 0, configured.stderr.decode()
    assert "3 other files ignored: 3 not of a type rfbatch sends (images: .png .webp; " in out
    assert "ignore_names" not in out


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
