from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfbatch.errors import FileChangedError, FileUnreadableError
from rfbatch.localfs.archive import (
    TarBody,
    TarMember,
    header_bytes,
    tarinfo_for,
)
from rfbatch.localfs.reading import KEPT_BUFFERS
from rfbatch.localfs.scan import examine_path
from rfbatch.media import FoundFile, SourceSpec
from tests.localfs.support import MakeFile

MTIME = 1_700_000_000
T = TypeVar("T")

names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00/"),
    min_size=1,
    max_size=40,
) | st.text(alphabet="abcdefghij_-.0123456789é", min_size=95, max_size=300)


def expected_tar(members: list[TarMember]) -> bytes:
    """What the standard library writes for the same members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for m in members:
            if m.data is not None:
                tar.addfile(tarinfo_for(m), io.BytesIO(m.data))
            else:
                assert m.path is not None
                with m.path.open("rb") as fh:
                    tar.addfile(tarinfo_for(m), fh)
    return buf.getvalue()


async def stream(body: TarBody) -> bytes:
    out = bytearray()
    async for chunk in body.chunks():
        assert 0 < len(chunk) <= body.chunk_size
        out += chunk
    return bytes(out)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": True})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(
        st.tuples(names, st.integers(0, 3000), st.booleans(), st.integers(0, 2**33)),
        max_size=8,
        unique_by=lambda t: t[0],
    ),
    chunk_size=st.sampled_from([100, 511, 512, 4096, 1 << 20]),
)
def test_stream_equals_tarfile_byte_for_byte(
    specs: list[tuple[str, int, bool, int]], chunk_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        members: list[TarMember] = []
        for i, (name, size, in_memory, mtime) in enumerate(specs):
            data = os.urandom(size)
            if in_memory:
                members.append(TarMember.from_bytes(name, data, mtime))
            else:
                path = Path(tmp) / f"f{i}"
                path.write_bytes(data)
                members.append(TarMember(name, path, None, size, mtime))
        body = TarBody(members, chunk_size=chunk_size)
        # Known before a byte is read: it is the request's Content-Length.
        announced = body.length

        async def twice() -> tuple[bytes, bytes]:
            # Re-iterable: a retried upload gets the same bytes again.
            return await stream(body), await stream(body)

        streamed, again = run(twice)
        assert streamed == expected_tar(members)
        assert len(streamed) == announced
        assert again == streamed
        with tarfile.open(fileobj=io.BytesIO(streamed), mode="r:") as tar:
            back = tar.getmembers()
            assert [m.name for m in back] == [m.name for m in members]
            for info, member in zip(back, members, strict=True):
                extracted = tar.extractfile(info)
                assert extracted is not None
                want = member.data if member.data is not None else member.path.read_bytes()  # type: ignore[union-attr]
                assert extracted.read() == want
                assert (info.mode, info.uid, info.gid, info.uname, info.gname) == (
                    0o644,
                    0,
                    0,
                    "",
                    "",
                )
                assert info.mtime == member.mtime


LIMIT = 8**11  # where the size and mtime fields overflow into a PAX header


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), min_size=1, max_size=102)
    | st.text(min_size=1, max_size=102).filter(lambda n: "\x00" not in n and n.isprintable()),
    size=st.integers(0, 20) | st.integers(LIMIT - 2, LIMIT + 1),
    mtime=st.integers(0, 2**31) | st.integers(LIMIT - 2, LIMIT + 1),
)
def test_header_fast_path_equals_tarfile(name: str, size: int, mtime: int) -> None:
    # The hand-packed ustar header must be the one tarfile writes, at every field boundary.
    member = TarMember(name, Path("/unused"), None, size, mtime)
    want = tarinfo_for(member).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert header_bytes(member) == want


def found(path: Path) -> FoundFile:
    [item] = examine_path(SourceSpec(path.parent), path)
    assert isinstance(item, FoundFile)
    return item


async def test_long_and_unicode_names_get_pax_headers(make_file: MakeFile) -> None:
    path = make_file("a.jpg", b"12345")
    members = [
        TarMember.from_found("é" * 10 + ".jpg", found(path)),
        TarMember.from_found("n" * 150 + ".jpg", found(path)),
        TarMember.from_bytes(
            "notification_config.json", b'{"ingestId": "x", "notificationsURL": "y"}', MTIME
        ),
    ]
    body = TarBody(members)
    announced = body.length
    data = await stream(body)
    assert data == expected_tar(members)
    assert len(data) == announced
    assert len(data) % tarfile.RECORDSIZE == 0
    assert b"path=" in data  # the PAX records are there


async def test_empty_tar_is_two_zero_blocks_padded_to_a_record() -> None:
    body = TarBody([])
    assert await stream(body) == bytes(tarfile.RECORDSIZE)
    assert body.length == tarfile.RECORDSIZE


async def test_file_changed_during_streaming_raises(make_file: MakeFile) -> None:
    first = make_file("first.jpg", b"a" * 5000)
    second = make_file("second.jpg", b"b" * 5000)
    body = TarBody(
        [
            TarMember.from_found("first.jpg", found(first)),
            TarMember.from_found("s.jpg", found(second)),
        ],
        chunk_size=1024,
    )
    got = 0

    async def consume() -> None:
        nonlocal got
        async for chunk in body.chunks():
            got += len(chunk)
            if got == 1024:
                # The first file is being read: it grows under the reader.
                with first.open("ab") as fh:
                    fh.write(b"more")

    with pytest.raises(FileChangedError) as info:
        await consume()
    assert info.value.path == str(first)
    assert got < body.length  # the body never completes


async def test_file_touched_before_its_turn_raises(make_file: MakeFile) -> None:
    first = make_file("first.jpg", b"a" * 100)
    second = make_file("second.jpg", b"b" * 100)
    body = TarBody(
        [TarMember.from_found("1.jpg", found(first)), TarMember.from_found("2.jpg", found(second))],
        chunk_size=512,
    )

    async def consume() -> None:
        async for _chunk in body.chunks():
            os.utime(second, (MTIME, MTIME))  # same size, new mtime

    with pytest.raises(FileChangedError) as info:
        await consume()
    assert info.value.path == str(second)


async def test_file_truncated_while_read_raises(make_file: MakeFile) -> None:
    path = make_file("t.jpg", b"z" * 4096)
    body = TarBody([TarMember.from_found("t.jpg", found(path))], chunk_size=1024)

    async def consume() -> None:
        async for chunk in body.chunks():
            if len(chunk) == 1024:
                os.truncate(path, 10)

    with pytest.raises(FileChangedError, match="shrank"):
        await consume()


@pytest.mark.parametrize("how", ["replaced", "removed"])
async def test_file_replaced_or_removed_while_read_raises(
    make_file: MakeFile, tmp_path: Path, how: str
) -> None:
    path = make_file("r.jpg", b"r" * 4096)
    body = TarBody([TarMember.from_found("r.jpg", found(path))], chunk_size=1024)
    other = tmp_path / "other.jpg"

    async def consume() -> None:
        meddled = False
        async for _chunk in body.chunks():
            if meddled:
                continue
            meddled = True  # the file is being read: its first bytes are in this chunk
            if how == "removed":
                path.unlink()
                continue
            # Same size and mtime under the same name: only the inode tells.
            other.write_bytes(b"o" * 4096)
            st = path.stat()
            os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
            other.replace(path)

    with pytest.raises(FileChangedError, match=how) as info:
        await consume()
    assert info.value.path == str(path)


async def test_vanished_or_unreadable_file_raises(make_file: MakeFile, tmp_path: Path) -> None:
    path = make_file("v.jpg", b"abc")
    member = TarMember.from_found("v.jpg", found(path))
    path.unlink()
    with pytest.raises(FileUnreadableError) as info:
        await stream(TarBody([member]))
    assert info.value.path == str(path)
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(FileUnreadableError):
        await stream(TarBody([TarMember("d.jpg", folder, None, 0, MTIME)]))


async def test_size_other_than_announced_raises_before_reading(make_file: MakeFile) -> None:
    path = make_file("s.jpg", b"abc")
    with pytest.raises(FileChangedError, match="expected 4"):
        await stream(TarBody([TarMember("s.jpg", path, None, 4, MTIME)]))


def test_member_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TarMember("x", None, None, 0, 0)
    with pytest.raises(ValueError, match="exactly one"):
        TarMember("x", tmp_path, b"", 0, 0)
    with pytest.raises(ValueError, match="len"):
        TarMember("x", None, b"abc", 2, 0)
    with pytest.raises(ValueError, match="invalid member name"):
        TarMember("a\x00b", None, b"", 0, 0)
    with pytest.raises(UnicodeEncodeError):
        TarMember("bad\udc80", None, b"", 0, 0)


async def test_memory_stays_bounded_for_a_large_member(tmp_path: Path) -> None:
    path = tmp_path / "big.mp4"
    with path.open("wb") as fh:
        fh.truncate(8 * (1 << 20) + 3)  # sparse: cheap to create, read as zeros
    body = TarBody([TarMember("big.mp4", path, None, path.stat().st_size, MTIME)])
    sizes = [len(c) async for c in body.chunks()]
    assert max(sizes) == 1 << 20
    assert sum(sizes) == body.length


def _member_files(tmp_path: Path, sizes: list[int]) -> list[TarMember]:
    members = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}.jpg"
        path.write_bytes(os.urandom(size))
        members.append(TarMember(f"f{i}.jpg", path, None, size, MTIME))
    return members


async def test_chunks_kept_by_the_consumer_are_never_overwritten(tmp_path: Path) -> None:
    # Chunks are views of reused buffers: one still viewed (here: all of them, and a tail
    # sliced off as a transport keeps what it could not send) must never be filled again.
    members = _member_files(tmp_path, [3000, 100, 5000, 0, 7000, 2500])
    body = TarBody(members, chunk_size=1024)
    kept = []
    tails = []
    async for chunk in body.chunks():
        kept.append(chunk)
        tails.append(chunk[-100:])
    assert b"".join(kept) == expected_tar(members)
    assert b"".join(tails) == b"".join(bytes(c[-100:]) for c in kept)
    assert len({id(c.obj) for c in kept}) == len(kept)


async def test_buffers_are_reused_once_the_consumer_lets_go(tmp_path: Path) -> None:
    members = _member_files(tmp_path, [20_000, 30_000, 1_000])
    body = TarBody(members, chunk_size=4096)
    out = bytearray()
    buffers: list[object] = []
    async for chunk in body.chunks():
        out += chunk
        if not any(b is chunk.obj for b in buffers):
            buffers.append(chunk.obj)
    assert bytes(out) == expected_tar(members)
    assert len(out) // 4096 > 10
    # The one being filled, the one just handed on, and one to spare: never one per chunk.
    assert len(buffers) <= KEPT_BUFFERS
