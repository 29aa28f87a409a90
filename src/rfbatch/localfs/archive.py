"""Tar shards streamed straight from the files, with their exact length known up front.

A POSIX tar is a sequence of 512-byte blocks: per member a header (plus a PAX extended header
when the name is long or not ASCII), the data padded to a block, then two zero blocks and
padding to the record size. Every part's size is known from the names and file sizes alone, so
:class:`TarBody` knows its ``Content-Length`` before a byte is read, and streams the shard from
disk in ~1 MiB chunks: no temporary file, no whole shard in memory.

Headers have fixed metadata (mode 0644, owner 0:0, no user or group names, the file's mtime),
so the output is deterministic and equal byte for byte to what ``tarfile`` writes for the same
members. The common case (an ASCII name of at most 100 bytes, numbers that fit the octal
fields) is packed here directly, ~5x faster than :meth:`tarfile.TarInfo.tobuf`, which builds
every other header (PAX for long or non-ASCII names); a test holds the two equal.

Each file is read through :class:`~rfbatch.localfs.reading.CheckedFile`: checked against its
expected size (and mtime and inode, when known) when it is opened, and again before its last
byte is read, so a file that moved raises :class:`~rfbatch.errors.FileChangedError` before the
body is complete, and a half-written file is never sent as if whole.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncGenerator, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from rfbatch.localfs.reading import READ_CHUNK_SIZE, CheckedFile, ReadBuffers
from rfbatch.media import FoundFile

BLOCKSIZE = tarfile.BLOCKSIZE
RECORDSIZE = tarfile.RECORDSIZE
TAR_ENCODING = "utf-8"
FILE_MODE = 0o644


@dataclass(frozen=True, slots=True)
class TarMember:
    """One tar member: backed by a file (``path``) or held in memory (``data``), not both.

    ``mtime`` (seconds) goes into the header. ``mtime_ns`` and ``inode``, when set, are the
    exact mtime and inode the file must still have when it is read (see
    :class:`~rfbatch.localfs.reading.CheckedFile`); :meth:`from_found` fills them from the scan.
    """

    name: str
    path: Path | None
    data: bytes | None
    size: int
    mtime: int
    mtime_ns: int | None = None
    inode: int | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("a TarMember needs exactly one of path and data")
        if self.data is not None and len(self.data) != self.size:
            raise ValueError(f"member {self.name!r}: size {self.size} != len(data)")
        if self.size < 0 or self.mtime < 0:
            raise ValueError(f"member {self.name!r}: negative size or mtime")
        if not self.name or "\x00" in self.name:
            raise ValueError(f"invalid member name {self.name!r}")
        # PAX stores names as UTF-8; a lone surrogate would need hdrcharset=BINARY.
        self.name.encode("utf-8")

    @classmethod
    def from_found(cls, name: str, found: FoundFile) -> TarMember:
        """A member for a scanned file, pinned to the size and mtime the scan saw."""
        return cls(
            name=name,
            path=found.path,
            data=None,
            size=found.size,
            # A tar header cannot hold a time before 1970; the exact check uses mtime_ns anyway.
            mtime=max(0, found.mtime_ns // 1_000_000_000),
            mtime_ns=found.mtime_ns,
            inode=found.inode,
        )

    @classmethod
    def from_bytes(cls, name: str, data: bytes, mtime: int) -> TarMember:
        """An in-memory member, such as ``notification_config.json``."""
        return cls(name=name, path=None, data=data, size=len(data), mtime=mtime)


def tarinfo_for(member: TarMember) -> tarfile.TarInfo:
    """The :class:`tarfile.TarInfo` a member is written with (fixed, deterministic metadata)."""
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mtime = member.mtime
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def header_bytes(member: TarMember) -> bytes:
    """The header block(s) of ``member``, including a PAX header when one is needed."""
    name, size, mtime = member.name, member.size, member.mtime
    # Size and mtime are never negative (TarMember checks): only their upper bound matters.
    if name.isascii() and len(name) <= _NAME_FIELD and max(size, mtime) < _OCTAL_LIMIT:
        return _ustar_header(name.encode("ascii"), size, mtime)
    return tarinfo_for(member).tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, "surrogateescape")


# The ustar layout (POSIX.1-1988): name[100] mode[8] uid[8] gid[8] size[12] mtime[12]
# chksum[8] typeflag[1] linkname[100] magic+version[8] uname[32] gname[32] devmajor[8]
# devminor[8] prefix[155], padded to 512. Only name, size, mtime and the checksum vary here.
_NAME_FIELD = 100
_OCTAL_LIMIT = 8**11  # 11 octal digits and a NUL: the size and mtime fields' range
_MODE_UID_GID = b"%07o\x00" % FILE_MODE + b"0000000\x00" * 2
_AFTER_CHKSUM = tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC + bytes(BLOCKSIZE - 265)
# The checksum is the byte sum of the header with its own field as eight spaces.
_FIXED_SUM = sum(_MODE_UID_GID) + sum(b" " * 8) + sum(_AFTER_CHKSUM)


def _ustar_header(name: bytes, size: int, mtime: int) -> bytes:
    numbers = b"%011o\x00%011o\x00" % (size, mtime)
    checksum = sum(name) + sum(numbers) + _FIXED_SUM
    return b"".join(
        (
            name.ljust(_NAME_FIELD, b"\x00"),
            _MODE_UID_GID,
            numbers,
            b"%06o\x00 " % checksum,
            _AFTER_CHKSUM,
        )
    )


def _padding(size: int) -> int:
    return -size % BLOCKSIZE


def _trailer_length(body_length: int) -> int:
    end = body_length + 2 * BLOCKSIZE
    return 2 * BLOCKSIZE + (-end % RECORDSIZE)


class TarBody:
    """A tar of ``members`` streamed in chunks, with its exact :attr:`length`.

    :meth:`chunks` may be called again (for a retried upload): each call starts from the first
    byte and re-reads the files. File reads run in worker threads (pass ``limiter`` to bound
    how many shards read at once), one call per chunk, straight into a reused buffer
    (:class:`~rfbatch.localfs.reading.ReadBuffers`; pass ``buffers`` to share them between
    bodies): a chunk is a view of it, valid while the consumer holds it.
    """

    def __init__(
        self,
        members: Sequence[TarMember],
        *,
        chunk_size: int = READ_CHUNK_SIZE,
        limiter: anyio.CapacityLimiter | None = None,
        buffers: ReadBuffers | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if buffers is not None and buffers.size != chunk_size:
            raise ValueError("shared buffers must be chunk_size bytes")
        self.members: tuple[TarMember, ...] = tuple(members)
        self.chunk_size = chunk_size
        self._limiter = limiter
        self._buffers = buffers
        self._headers = [header_bytes(m) for m in self.members]
        body = sum(
            len(h) + m.size + _padding(m.size)
            for h, m in zip(self._headers, self.members, strict=True)
        )
        self._trailer = _trailer_length(body)
        self.length = body + self._trailer

    def __repr__(self) -> str:
        return f"TarBody(members={len(self.members)}, length={self.length})"

    async def chunks(self) -> AsyncGenerator[memoryview, None]:
        """Yield the whole tar, ``chunk_size`` bytes at a time (the last chunk may be shorter)."""
        buffers = self._buffers or ReadBuffers(self.chunk_size)
        reader = _TarReader(self.members, self._headers, self._trailer, buffers)
        try:
            while chunk := await anyio.to_thread.run_sync(reader.read_chunk, limiter=self._limiter):
                yield chunk
        finally:
            reader.close()


# Zeros to copy from: a member's padding (< one block) and the trailer (< a record and 2 blocks).
_ZEROS = memoryview(bytes(RECORDSIZE + 2 * BLOCKSIZE))

_Piece = memoryview | CheckedFile


class _TarReader:
    """The blocking half of :class:`TarBody`: fills one chunk per call, in a worker thread.

    Headers, in-memory data and zeros are copied into the chunk; file data is read into it, so
    every byte is copied once and no per-chunk object is allocated. A piece that does not fit
    (a header, the rest of a file) is carried on into the next chunk.
    """

    def __init__(
        self,
        members: Sequence[TarMember],
        headers: Sequence[bytes],
        trailer: int,
        buffers: ReadBuffers,
    ) -> None:
        self._members = members
        self._headers = headers
        self._trailer = trailer
        self._buffers = buffers
        self._piece: _Piece | None = None
        self._pieces = self._generate()

    def read_chunk(self) -> memoryview:
        """The next chunk (empty at the end): a view of a buffer nothing else views."""
        with self._buffers.take() as whole:
            size = len(whole)
            filled = 0
            while filled < size:
                piece = self._piece if self._piece is not None else next(self._pieces, None)
                if piece is None:
                    break
                if isinstance(piece, CheckedFile):
                    filled += piece.readinto(whole[filled:])
                    self._piece = piece if piece.remaining else None
                else:
                    n = min(len(piece), size - filled)
                    whole[filled : filled + n] = piece[:n]
                    filled += n
                    self._piece = piece[n:] if n < len(piece) else None
            # The slice keeps the buffer viewed (so not reused) until the consumer drops it.
            return whole[:filled]

    def close(self) -> None:
        # Closing the generator closes the file it is reading (its ``with`` block exits).
        self._piece = None
        self._pieces.close()

    def _generate(self) -> Generator[_Piece, None, None]:
        for member, header in zip(self._members, self._headers, strict=True):
            yield memoryview(header)
            if member.data is not None:
                yield memoryview(member.data)
            else:
                assert member.path is not None
                with CheckedFile(member.path, member.size, member.mtime_ns, member.inode) as file:
                    if file.remaining:
                        # read_chunk reads it to its end before it asks for the next piece.
                        yield file
            if pad := _padding(member.size):
                yield _ZEROS[:pad]
        yield _ZEROS[: self._trailer]
