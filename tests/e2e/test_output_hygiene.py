"""What a person reads is safe and whole: hostile file names cannot drive the terminal, tables
never cut an id, on a terminal or piped, and progress bars are drawn on a terminal only."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from rfbatch.emulator import Emulator
from tests.e2e.support import cli_env, make_tree, run_cli
from tests.reliability.support_b import run_in_pty

HOSTILE = "evil\x1b]0;owned\x07\nforged line.png"


async def test_control_characters_in_names_are_escaped(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    # A link is reported (not followed), so its hostile name reaches the report.
    os.symlink(src / sorted(os.listdir(src))[0], src / HOSTILE)
    env = cli_env(emulator, tmp_path / "state")

    done = await run_cli(["upload", str(src), "--batch", "hygiene"], env)

    out = done.stdout.decode()
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "forged line" in out
    assert not any(line.startswith("forged line") for line in out.splitlines()), out
    assert "evil\\x1b]0;owned\\x07\\x0aforged line.png" in out


async def test_console_log_lines_escape_control_characters(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    # Empty, so skipped: its name reaches the upload.skipped log line. No space in it, so the
    # console renderer would print it bare, escape sequences and all.
    (src / "x\x1b]0;owned\x07\x1b[2J.png").write_bytes(b"")
    env = cli_env(emulator, tmp_path / "state")

    done = await run_cli(["upload", str(src), "--batch", "console", "--log-format", "console"], env)

    err = done.stderr.decode()
    assert done.returncode == 1, err  # the empty file is skipped
    assert "upload.skipped" in err  # a console line (colours are off: stderr is a pipe)
    assert "\x1b" not in err
    assert "\x07" not in err
    assert "x\\x1b]0;owned\\x07\\x1b[2J.png" in err


LONG_ID = "a-very-long-batch-id-that-a-narrow-table-would-cut-" + "x" * 13  # 64 characters


async def _uploaded_under_a_long_id(
    emulator: Emulator, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """Two images uploaded to a batch whose id is as long as ids get; the env and the id."""
    src = tmp_path / "src"
    make_tree(src, 2)
    env = cli_env(emulator, tmp_path / "state")
    sent = await run_cli(["upload", str(src), "--batch", LONG_ID], env)
    assert sent.returncode == 0, sent.stderr.decode()
    return env, LONG_ID


async def test_piped_tables_show_whole_ids(emulator: Emulator, tmp_path: Path) -> None:
    env, batch = await _uploaded_under_a_long_id(emulator, tmp_path)

    listed = await run_cli(["batch", "list"], env)

    assert listed.returncode == 0, listed.stderr.decode()
    rows = listed.stdout.decode().splitlines()
    assert any(batch in row for row in rows), rows
    assert not any("…" in row for row in rows), rows


async def test_tables_on_a_narrow_terminal_fold_ids_and_never_cut_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    env, batch = await _uploaded_under_a_long_id(emulator, tmp_path)

    code, screen = await anyio.to_thread.run_sync(
        lambda: run_in_pty(["batch", "list"], env, columns=60)
    )

    assert code == 0, screen
    assert "…" not in screen
    # The id's cell is folded over several rows of the table's first column: read back down
    # that column, it is the whole id.
    rows = [line for line in screen.splitlines() if line.startswith("│")]
    assert len(rows) > 1, screen  # folded, so the narrow terminal really was narrow
    assert "".join(row.split("│")[1].strip() for row in rows) == batch


async def test_progress_bars_are_drawn_on_a_terminal_only(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 30)
    piped_env = cli_env(emulator, tmp_path / "piped")
    piped_env["RFBATCH_LOG__FORMAT"] = "console"  # lines for a person, but stderr is a pipe

    piped = await run_cli(["upload", str(src), "--batch", "piped"], piped_env)
    tty_env = cli_env(emulator, tmp_path / "tty")
    del tty_env["RFBATCH_LOG__FORMAT"]
    code, screen = await anyio.to_thread.run_sync(
        lambda: run_in_pty(["upload", str(src), "--batch", "tty"], tty_env)
    )

    err = piped.stderr.decode()
    assert piped.returncode == 0, err
    assert "upload.shard" in err  # the log lines, and nothing else
    assert "30/30 files" not in err
    assert "\r" not in err
    assert "\x1b" not in err  # no cursor movement, no colour
    assert "sent 30 files" in piped.stdout.decode()
    assert code == 0, screen
    assert "upload 30/30 files" in screen  # the same run on a terminal draws its bars
    assert "confirm tty: 30/30 files ingested" in screen
