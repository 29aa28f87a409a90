"""Bad local input: every file is sent whole, or skipped with its reason recorded; the rest go on.

The tree tests run ``rfbatch upload`` as a subprocess against an emulator that decodes what it
ingests (``check_image_content``), so a text file named ``.jpg`` fails there as it would on the
real service. The unreadable file is a mode-000 file read by a process without
CAP_DAC_OVERRIDE (``setpriv`` drops it when the tests run as root), so the kernel refuses it as
it would refuse any user. The timing-sensitive cases (a file deleted, swapped or growing after
discovery) run the pipeline in-process and act from a hook placed just before, or in the middle
of, the read of the file, so the race is decided, not hoped for.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from rfbatch.api.schemas import SignedUrl
from rfbatch.app import Services, open_services
from rfbatch.emulator import Emulator, EmulatorConfig
from rfbatch.pipeline.upload_pass import (
    PassResult,
    UploadTarget,
    source_specs,
    upload_and_confirm,
    upload_options,
)
from rfbatch.samples import png_bytes
from rfbatch.transfer.body import BodySource
from tests.conftest import emulator_config_with
from tests.e2e.support import (
    RFBATCH,
    batch_items,
    cli_env,
    received_digests,
    run_cli,
    settings_for,
    sha,
)
from tests.reliability.support_b import manifest_files, without_file_permissions

MiB = 1024 * 1024
LIMIT = 20 * MiB
CHUNK = 64 * 1024
Kind = Literal["image", "video"]


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return emulator_config_with(tmp_path, check_image_content=True)


def image(seed: int, size: int = 2000) -> bytes:
    return png_bytes(8, 8, seed, pad_to=size)


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def bad_tree(src: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Files that must be sent (path -> bytes) and files that must be skipped (path -> reason)."""
    good = {
        "plain.png": image(1),
        "with  spaces .png": image(2),
        "ünïcödé 日本語.png": image(3),
        "new\nline.png": image(4),
        "tab\there.png": image(5),
        # Read as a drive letter ("1:") by Windows-minded tar checks, the emulator's among them.
        "1:30 at night.png": image(10),
        # A folder named like an image is walked into, not read.
        "folder.jpg/inside.png": image(6),
        # Exactly the per-image limit is allowed.
        "at-the-limit.png": image(7, LIMIT),
    }
    sent = {str(src / rel): write(src / rel, data) for rel, data in good.items()}
    # Bytes that are not UTF-8 in a name reach Python as lone surrogates.
    raw_name = os.fsencode(src) + b"/stray-\xff-byte.png"
    with open(raw_name, "wb") as fh:
        fh.write(image(8))
    sent[os.fsdecode(raw_name)] = image(8)
    # Sent by rfbatch (its name says image), refused by the service once decoded.
    sent[str(src / "text.jpg")] = write(src / "text.jpg", b"this is not an image\n" * 10)

    skipped: dict[str, str] = {}
    write(src / "empty.png", b"")
    skipped[str(src / "empty.png")] = "empty-file"
    with open(src / "over.jpg", "wb") as fh:  # sparse: only its size matters
        fh.truncate(LIMIT + 1)
    skipped[str(src / "over.jpg")] = (
        f"too-large: image of {LIMIT + 1} bytes is over the {LIMIT}-byte limit"
    )
    write(src / "locked.png", image(9))
    (src / "locked.png").chmod(0)
    skipped[str(src / "locked.png")] = "Permission denied"
    os.mkfifo(src / "pipe.jpg")
    skipped[str(src / "pipe.jpg")] = "not-a-regular-file: not a regular file: a FIFO"
    (src / "dangling.png").symlink_to(src / "nowhere" / "x.png")
    skipped[str(src / "dangling.png")] = "unreadable: dangling symbolic link"
    (src / "loop-a.png").symlink_to(src / "loop-b.png")
    (src / "loop-b.png").symlink_to(src / "loop-a.png")
    for name in ("loop-a.png", "loop-b.png"):
        skipped[str(src / name)] = "symlink-loop: Too many levels of symbolic links"
    (src / "sub").mkdir()
    (src / "sub" / "back").symlink_to(src, target_is_directory=True)
    skipped[str(src / "sub" / "back")] = "symlink-loop: folder already scanned"
    return sent, skipped


async def test_bad_files_are_skipped_with_reasons_and_the_rest_arrive_whole(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sent, skipped = bad_tree(src)
    state = tmp_path / "state"
    env = cli_env(emulator, state)
    env["RFBATCH_SCAN__FOLLOW_SYMLINKS"] = "true"
    command = without_file_permissions([*RFBATCH, "upload", str(src), "--batch", "bad", "--json"])
    if command is None:
        pytest.skip("root without setpriv: a mode-000 file cannot be made unreadable")

    done = await anyio.run_process(command, env=env, check=False)

    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert done.returncode == 1, stderr  # some files were skipped
    summary = json.loads(done.stdout)
    assert {s["path"]: s["reason"] for s in summary["skipped"]} == skipped
    # Sent, then refused by the service at ingest: named as failed, with the shard's status.
    assert [f["path"] for f in summary["failed"]] == [str(src / "text.jpg")]
    assert "rejected by the service at ingest" in summary["failed"][0]["reason"]
    assert summary["files_sent"] == len(sent)
    assert summary["bytes_sent"] == sum(len(d) for d in sent.values())
    # Every file rfbatch sent arrived whole, once; the text file was refused at ingest.
    decodable = {p: d for p, d in sent.items() if not p.endswith("text.jpg")}
    assert received_digests(emulator, "bad") == {sha(d): 1 for d in decodable.values()}
    failed_items = emulator.state()["batches"]["bad"]["failedItems"]
    assert failed_items == [{"name": "text.jpg", "reason": "invalid-image-content"}]
    [batch] = summary["batches"]
    assert (batch["count"], batch["failed_by_service"]) == (len(decodable), 1)
    names = [item["name"] for item in batch_items(emulator, "bad")]
    assert not [n for n in names if set(n) & set("\n\t/\\")]
    # The manifest says the same, path by path.
    rows = manifest_files(state)
    for path, reason in skipped.items():
        assert rows[path] == ("skipped", reason), path
    for path in decodable:
        assert rows[path][0] == "ingested", path

    again = await anyio.run_process(command, env=env, check=False)
    assert "Traceback" not in again.stderr.decode()
    assert json.loads(again.stdout)["files_sent"] == 0
    assert received_digests(emulator, "bad") == {sha(d): 1 for d in decodable.values()}


async def test_links_are_not_followed_by_default_and_each_says_so(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    real = {str(src / "real.png"): write(src / "real.png", image(1))}
    real[str(src / "cams" / "a.png")] = write(src / "cams" / "a.png", image(2))
    (src / "link.png").symlink_to(src / "real.png")
    (src / "dangling.png").symlink_to(src / "nowhere.png")
    (src / "loop-a.png").symlink_to(src / "loop-b.png")
    (src / "loop-b.png").symlink_to(src / "loop-a.png")
    (src / "cams-link").symlink_to(src / "cams", target_is_directory=True)
    state = tmp_path / "state"

    done = await run_cli(
        ["upload", str(src), "--batch", "links", "--json"], cli_env(emulator, state)
    )

    assert done.returncode == 1, done.stderr.decode()
    summary = json.loads(done.stdout)
    links = [str(src / n) for n in ("link.png", "dangling.png", "loop-a.png", "loop-b.png")]
    reason = "symlink-not-followed: a symbolic link; set [scan] follow_symlinks = true to send"
    assert sorted(s["path"] for s in summary["skipped"]) == sorted(links)
    assert all(s["reason"].startswith(reason) for s in summary["skipped"])
    # The linked folder is not walked: its files arrive once, through their real path.
    assert received_digests(emulator, "links") == {sha(d): 1 for d in real.values()}
    rows = manifest_files(state)
    assert all(rows[path][0] == "skipped" for path in links)


async def test_a_file_the_service_cannot_decode_is_reported_as_failed(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write(src / "good.png", image(1))
    write(src / "text.jpg", b"plain text, not an image")
    state = tmp_path / "state"

    done = await run_cli(
        ["upload", str(src), "--batch", "undecodable", "--json"], cli_env(emulator, state)
    )

    summary = json.loads(done.stdout)
    assert summary["batches"][0]["failed_by_service"] == 1
    assert done.returncode == 1
    assert [f["path"] for f in summary["failed"]] == [str(src / "text.jpg")]
    # Recorded as never sendable (like a local skip): a rerun does not send it again.
    assert manifest_files(state)[str(src / "text.jpg")][0] == "skipped"


async def test_a_summary_naming_a_file_that_is_not_utf8_prints_on_a_utf8_terminal(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(os.fsencode(src) + b"/empty-\xff.png", "wb"):
        pass  # empty: skipped, so the summary names it
    env = cli_env(emulator, tmp_path / "state")
    env["PYTHONIOENCODING"] = "utf-8"  # what a UTF-8 locale gives: strict, no surrogateescape

    done = await run_cli(["upload", str(src), "--batch", "utf8"], env)

    assert "Traceback" not in done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1
    assert b"empty-file" in done.stdout


# --- races: deleted or growing after discovery ---------------------------------------------


@asynccontextmanager
async def pipeline(emulator: Emulator, tmp_path: Path) -> AsyncIterator[Services]:
    settings = settings_for(
        emulator,
        tmp_path / "state",
        # One file per shard, one upload at a time: nothing is read before the first URL.
        upload={"chunk_bytes": CHUNK, "shard_max_files": 1, "shard_workers": 1, "video_workers": 1},
    )
    async with open_services(settings) as services:
        yield services


async def upload(services: Services, src: Path, batch: str) -> PassResult:
    target = UploadTarget(batch, f"{batch}-videos", upload_options(services.settings))
    return await upload_and_confirm(services, source_specs(services, [str(src)]), target)


def victim_and_others(src: Path, kind: Kind) -> tuple[Path, dict[str, bytes]]:
    ext = ".png" if kind == "image" else ".mp4"
    others = {
        str(src / f"other-{i}{ext}"): write(src / f"other-{i}{ext}", image(10 + i))
        for i in range(3)
    }
    victim = src / f"victim{ext}"
    write(victim, image(99, 5 * CHUNK))
    return victim, others


def url_hook(
    services: Services, kind: Kind, monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]
) -> None:
    """Call ``act`` once, when the victim's upload URL is asked for: after the file was found
    and settled, before a byte of it is read."""
    name = "shard_upload_url" if kind == "image" else "video_upload_url"
    original = getattr(services.client, name)
    done = False

    async def hooked(*args: Any, **kwargs: Any) -> SignedUrl:
        nonlocal done
        if not done:
            done = True
            act()
        result: SignedUrl = await original(*args, **kwargs)
        return result

    monkeypatch.setattr(services.client, name, hooked)


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_a_file_deleted_after_discovery_is_skipped_and_the_rest_arrive(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: Kind
) -> None:
    src = tmp_path / "src"
    victim, others = victim_and_others(src, kind)
    batch = "deleted" if kind == "image" else "deleted-videos"

    async with pipeline(emulator, tmp_path) as services:
        url_hook(services, kind, monkeypatch, lambda: victim.unlink())
        result = await upload(services, src, "deleted")
        row = await services.manifest.get_file(victim)

    assert not victim.exists()
    assert [(f.path, f.reason) for f in result.tally.skipped] == [
        (str(victim), "No such file or directory")
    ]
    assert result.tally.failed_count == 0
    assert received_digests(emulator, batch) == {sha(d): 1 for d in others.values()}
    assert row is not None
    assert (row.state, row.last_error) == ("skipped", "No such file or directory")


async def test_a_file_swapped_for_a_link_to_another_file_is_never_sent(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    victim, others = victim_and_others(src, "image")
    # A file outside the source, made to look exactly like the victim: same size and mtime.
    secret = tmp_path / "outside" / "secret.png"
    write(secret, image(1234, len(victim.read_bytes())))
    st = victim.stat()
    os.utime(secret, ns=(st.st_atime_ns, st.st_mtime_ns))

    def swap() -> None:
        victim.unlink()
        victim.symlink_to(secret)

    async with pipeline(emulator, tmp_path) as services:
        url_hook(services, "image", monkeypatch, swap)
        result = await upload(services, src, "swapped")

    assert received_digests(emulator, "swapped") == {sha(d): 1 for d in others.values()}
    # Caught as replaced, put back, and on the next pass seen for what it now is: a link.
    assert result.tally.requeued == 1
    # Seen in two passes, counted once.
    assert result.tally.found == len(others) + 1
    assert [(f.path, f.reason.split(":")[0]) for f in result.tally.skipped] == [
        (str(victim), "symlink-not-followed")
    ]


class GrowingBody:
    """A body that appends to ``path`` once its first chunk has gone out: the file grows while
    it is being sent."""

    def __init__(self, inner: BodySource, path: Path, extra: bytes) -> None:
        self._inner = inner
        self._path = path
        self._extra = extra
        self.grew = False

    @property
    def length(self) -> int:
        return self._inner.length

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        async for chunk in self._inner.chunks():
            yield chunk
            if not self.grew:
                self.grew = True
                await anyio.to_thread.run_sync(self._append)

    def _append(self) -> None:
        with self._path.open("ab") as fh:
            fh.write(self._extra)


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_a_file_growing_while_sent_is_never_sent_half_and_arrives_whole(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: Kind
) -> None:
    src = tmp_path / "src"
    victim, others = victim_and_others(src, kind)
    original = victim.read_bytes()
    extra = b"\x00more bytes written by a slow camera" * 100
    batch = "growing" if kind == "image" else "growing-videos"

    async with pipeline(emulator, tmp_path) as services:
        put = services.transfer.put
        bodies: list[GrowingBody] = []

        async def growing_put(signed: SignedUrl, body: BodySource, **kwargs: Any) -> int:
            # Only the victim's first attempt grows it: a body of its size, or a tar holding it.
            if not bodies and body.length >= len(original):
                bodies.append(GrowingBody(body, victim, extra))
                body = bodies[0]
            sent: int = await put(signed, body, **kwargs)
            return sent

        monkeypatch.setattr(services.transfer, "put", growing_put)
        result = await upload(services, src, "growing")
        row = await services.manifest.get_file(victim)

    assert [b.grew for b in bodies] == [True]
    final = original + extra
    assert victim.read_bytes() == final
    # The first version was cut off mid-body, so the storage never took it; the grown file was
    # sent again by the next pass, whole, and the other files once each.
    assert received_digests(emulator, batch) == {sha(d): 1 for d in [*others.values(), final]}
    assert result.tally.requeued == 1
    assert (result.tally.skipped_count, result.tally.failed_count) == (0, 0)
    assert result.complete
    assert row is not None
    assert (row.state, row.size) == ("ingested", len(final))


# --- one large folder -------------------------------------------------------------------------


def make_many(folder: Path, count: int) -> None:
    folder.mkdir()
    base = os.fsencode(folder)
    for i in range(count):
        fd = os.open(base + b"/f%06d.jpg" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"\xff\xd8\xff")
        finally:
            os.close(fd)


@pytest.mark.slow
async def test_a_folder_of_100000_files_is_scanned_and_listed(
    emulator: Emulator, tmp_path: Path
) -> None:
    count = 100_000
    src = tmp_path / "many"
    try:
        await anyio.to_thread.run_sync(make_many, src, count)
        env = cli_env(emulator, tmp_path / "state")

        done = await run_cli(["upload", str(src), "--batch", "many", "--dry-run", "--json"], env)

        assert done.returncode == 0, done.stderr.decode()[-2000:]
        listing = json.loads(done.stdout)
        assert (listing["count"], listing["bytes"], listing["skipped"]) == (count, 3 * count, [])
        assert len({f["path"] for f in listing["files"]}) == count
        assert "many" not in emulator.state()["batches"]
    finally:
        # 100,000 inodes are not left for pytest's kept temporary folders.
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(src, ignore_errors=True))


async def test_json_names_a_file_that_is_not_utf8_readably_and_exactly(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(src) + b"/empty-\xff.png"
    with open(raw, "wb"):
        pass  # empty: skipped, so the report names it

    done = await run_cli(
        ["upload", str(src), "--batch", "utf8", "--json"], cli_env(emulator, tmp_path / "state")
    )

    assert done.returncode == 1
    text = done.stdout.decode("utf-8")  # strict: nothing a JSON tool would turn into U+FFFD
    assert "\\ud" not in text
    [skipped] = json.loads(text)["skipped"]
    assert skipped["path"] == f"{src}/empty-\\xff.png"
    assert base64.b64decode(skipped["path_base64"]) == raw
