"""A forward-only tar reader for shard bodies, fast enough to keep up with a loopback PUT.

``tarfile``'s streaming mode copies every block several times and tops out near 200 MB/s; this
reader parses headers with :meth:`tarfile.TarInfo.frombuf` (checksums, ustar prefixes, base-256
sizes) and hands member bytes straight from the source, so hashing dominates. It understands
ustar, GNU long names (``L``/``K``) and PAX extended headers (``x``/``g``: ``path``,
``linkpath``, ``size``). It never seeks and never writes anywhere: deciding what a member may
become is the caller's job.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Protocol

BLOCK = 512
_MAX_META = 1024 * 1024  # long names and PAX headers larger than this are refused
_ENCODING = "utf-8"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class TarStreamError(Exception):
    """The body is not a well-formed tar archive."""


class _Source:
    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._pending = b""
        self.count = 0

    def read_some(self, limit: int) -> bytes:
        if self._pending:
            piece, self._pending = self._pending[:limit], self._pending[limit:]
        else:
            piece = self._inner.read(limit)
            if len(piece) > limit:  # a reader may hand back more than asked; keep the rest
                piece, self._pending = piece[:limit], piece[limit:]
        self.count += len(piece)
        return piece

    def read_exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        left = size
        while left > 0:
            piece = self.read_some(left)
            if not piece:
                raise TarStreamError("unexpected end of data")
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)

    def skip(self, size: int) -> None:
        left = size
        while left > 0:
            piece = self.read_some(min(left, 1024 * 1024))
            if not piece:
                raise TarStreamError("unexpected end of data")
            left -= len(piece)


class MemberReader:
    """The bytes of one member; what is left unread is skipped before the next header."""

    def __init__(self, source: _Source, size: int) -> None:
        self._source = source
        self.remaining = size

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (maybe fewer); everything that is left when ``size`` < 0."""
        if self.remaining <= 0:
            return b""
        if size is None or size < 0:
            data = self._source.read_exact(self.remaining)
            self.remaining = 0
            return data
        piece = self._source.read_some(min(size, self.remaining))
        if not piece:
            raise TarStreamError("unexpected end of data")
        self.remaining -= len(piece)
        return piece


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError as exc:
            raise TarStreamError("bad PAX header") from exc
        end = pos + length
        if space < 0 or length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarStreamError("bad PAX header")
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep:
            raise TarStreamError("bad PAX header")
        records[key.decode(_ENCODING, "surrogateescape")] = value.decode(
            _ENCODING, "surrogateescape"
        )
        pos = end
    return records


def _read_meta(source: _Source, info: tarfile.TarInfo) -> bytes:
    if info.size > _MAX_META:
        raise TarStreamError("extended header too large")
    data = source.read_exact(info.size)
    source.skip(_padded(info.size) - info.size)
    return data


def iter_members(body: Readable) -> Iterator[tuple[tarfile.TarInfo, MemberReader]]:
    """Yield each member with a reader for its bytes, in archive order.

    Raises :class:`TarStreamError` for a malformed or truncated archive (an empty body too).
    """
    source = _Source(body)
    global_pax: dict[str, str] = {}
    pending_pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        header = source.read_some(BLOCK)
        if not header:
            if source.count == 0:
                raise TarStreamError("empty file")
            return  # like tarfile, accept an archive that stops without end-of-archive blocks
        if len(header) < BLOCK:
            header += source.read_exact(BLOCK - len(header))
        if header == bytes(BLOCK):
            return  # end-of-archive marker; anything after it is ignored
        try:
            info = tarfile.TarInfo.frombuf(header, _ENCODING, "surrogateescape")
        except tarfile.HeaderError as exc:
            raise TarStreamError(f"bad header: {exc}") from exc
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = _read_meta(source, info).rstrip(b"\0").decode(_ENCODING, "surrogateescape")
            continue
        if info.type == tarfile.GNUTYPE_LONGLINK:
            long_link = _read_meta(source, info).rstrip(b"\0").decode(_ENCODING, "surrogateescape")
            continue
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            pending_pax.update(_parse_pax(_read_meta(source, info)))
            continue
        if info.type == tarfile.XGLTYPE:
            global_pax.update(_parse_pax(_read_meta(source, info)))
            continue
        pax = {**global_pax, **pending_pax}
        if "path" in pax:
            info.name = pax["path"]
        elif long_name is not None:
            info.name = long_name
        if "linkpath" in pax:
            info.linkname = pax["linkpath"]
        elif long_link is not None:
            info.linkname = long_link
        if "size" in pax:
            try:
                info.size = int(pax["size"])
            except ValueError as exc:
                raise TarStreamError("bad PAX size") from exc
        pending_pax, long_name, long_link = {}, None, None
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise TarStreamError("sparse members are not supported")
        # As in tarfile: data follows regular files and unknown types, never links or devices.
        has_data = info.type in tarfile.REGULAR_TYPES or info.type not in tarfile.SUPPORTED_TYPES
        size = info.size if has_data else 0
        member = MemberReader(source, size)
        yield info, member
        source.skip(member.remaining + _padded(size) - size)
