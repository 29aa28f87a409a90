"""What a person reads is safe and whole: hostile file names cannot drive the terminal, and
tables never cut an id, also when piped."""

from __future__ import annotations

import os
from pathlib import Path

from rfbatch.emulator import Emulator
from tests.e2e.support import cli_env, make_tree, run_cli

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


async def test_piped_tables_show_whole_ids(emulator: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    env = cli_env(emulator, tmp_path / "state")
    batch = "a-very-long-batch-id-that-a-narrow-table-would-cut-" + "x" * 13  # 64 characters
    sent = await run_cli(["upload", str(src), "--batch", batch], env)
    assert sent.returncode == 0, sent.stderr.decode()

    listed = await run_cli(["batch", "list"], env)

    assert listed.returncode == 0, listed.stderr.decode()
    rows = listed.stdout.decode().splitlines()
    assert any(batch in row for row in rows), rows
    assert not any("…" in row for row in rows), rows
