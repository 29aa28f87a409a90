"""What the upload display shows, and log lines that reach the terminal above it."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from rfbatch.obs.logging import configure_logging
from rfbatch.obs.progress import upload_rows
from rfbatch.obs.tally import Tally


def test_bytes_count_as_they_go_out_not_when_a_shard_is_done() -> None:
    tally = Tally(queued=500, queued_bytes=50_000_000)
    tally.wire_bytes = 12_000_000  # a shard under way: nothing finished yet

    [row] = upload_rows(tally)

    assert (row.description, row.completed, row.total) == (
        "upload 0/500 files",
        12_000_000,
        50_000_000,
    )
    # Retried bytes never push the bar past what there is to send.
    tally.wire_bytes = 80_000_000
    assert upload_rows(tally)[0].completed == 50_000_000


def test_files_settling_and_the_ingest_of_each_batch_get_rows_of_their_own() -> None:
    pending = [7]
    tally = Tally(queued=3, sent=3)
    tally.settling = lambda: pending[0]
    assert [r.description for r in upload_rows(tally)][1:] == ["settle 7 files waiting to be quiet"]

    pending[0] = 0
    tally.phase = "confirm"
    tally.ingest = {"cams": (2, 3)}
    rows = upload_rows(tally)
    assert [(r.description, r.completed, r.total) for r in rows[1:]] == [
        ("confirm cams: 2/3 files ingested", 2, 3)
    ]
    assert [r.unit for r in rows] == ["bytes", ""]  # sizes and speeds only on the bytes row


def test_log_lines_go_to_stderr_as_it_is_when_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # A live display replaces sys.stderr with a proxy that prints above the bars: lines
    # written to the stderr of start-up would tear them.
    configure_logging(level="info", fmt="json")
    live = io.StringIO()
    monkeypatch.setattr(sys, "stderr", live)

    structlog.get_logger("t").info("upload.shard", files=3)

    assert '"event": "upload.shard"' in live.getvalue()
