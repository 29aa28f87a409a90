"""A shaped network link in front of the emulator: round trips, handshakes and bandwidth.

``--link rtt=40ms,conn=25MB/s,total=100MB/s`` (each part optional) makes loopback behave like
a WAN path to cloud storage: every answer waits one round trip; a new connection first pays its
handshakes (one round trip for TCP, one more for TLS); each connection's bytes are paced to
``conn`` and all connections together to ``total``, each direction on its own (a link is full
duplex).

Pacing is by token buckets, one per connection and direction and one shared per direction,
applied at the transport: bytes received are handed on at once and reading then pauses for as
long as the buckets are in debt (TCP's flow control holds the sender back meanwhile); bytes
sent go out at once and the writer is then paused the same way, so a handler's ``drain()``
waits. No sleep per chunk, and no handler knows the link is there.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

# Size units: decimal as network speeds are quoted, binary when asked for.
_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]i?b|b)/s\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$", re.IGNORECASE)
# How far a bucket may run ahead (its burst), as seconds of its rate: small, so that pacing is
# even over a fraction of a second, yet larger than one socket read or write.
BURST_SECONDS = 0.05
MIN_BURST = 256 * 1024
# The receive buffer of a shaped connection. Over a real path the bytes a sender has handed to
# its kernel but the link has not yet carried are its send buffer plus about one
# bandwidth-delay product; loopback's autotuning would grow the receiver's buffer to tens of
# megabytes, letting a client hand over whole bodies at once and then wait, which no WAN allows.
RECEIVE_BUFFER = 256 * 1024


@dataclass(frozen=True)
class LinkProfile:
    """``rtt`` in seconds; ``conn`` and ``total`` in bytes per second (``None``: no cap)."""

    rtt: float = 0.0
    conn: float | None = None
    total: float | None = None

    @classmethod
    def parse(cls, text: str) -> LinkProfile:
        """``"rtt=40ms,conn=25MB/s,total=100MB/s"``, each part optional; a bad part is a
        :class:`ValueError` naming it."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("rtt", "conn", "total") or key in values:
                raise ValueError(f"link part {part!r}: use rtt=40ms, conn=25MB/s, total=100MB/s")
            pattern = _TIME if key == "rtt" else _RATE
            found = pattern.match(value)
            if found is None:
                example = "40ms" if key == "rtt" else "25MB/s"
                raise ValueError(f"link part {part!r}: the value is not like {example}")
            number, unit = float(found.group(1)), found.group(2).lower()
            if key == "rtt":
                values[key] = number / 1000 if unit == "ms" else number
            elif number <= 0:
                raise ValueError(f"link part {part!r}: a rate must be above zero")
            else:
                values[key] = number * _UNITS[unit]
        return cls(rtt=values.get("rtt", 0.0), conn=values.get("conn"), total=values.get("total"))

    def __str__(self) -> str:
        parts = [f"rtt={self.rtt * 1000:g}ms"]
        parts += [
            f"{k}={v / 1e6:g}MB/s" for k, v in (("conn", self.conn), ("total", self.total)) if v
        ]
        return ",".join(parts)


class TokenBucket:
    """``rate`` bytes a second, at most a burst ahead; a take beyond the level runs into debt,
    and the debt in seconds is how long the taker should wait."""

    __slots__ = ("_clock", "_last", "burst", "level", "rate")

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(MIN_BURST, rate * BURST_SECONDS)
        self.level = self.burst
        self._clock = clock
        self._last = clock()

    def take(self, n: int) -> float:
        now = self._clock()
        self.level = min(self.burst, self.level + (now - self._last) * self.rate)
        self._last = now
        self.level -= n
        return -self.level / self.rate if self.level < 0 else 0.0


class Link:
    """One emulator's link: the shared buckets, and a protocol factory that shapes each
    connection."""

    def __init__(self, profile: LinkProfile, *, tls: bool) -> None:
        self.profile = profile
        self.handshake = profile.rtt * (2 if tls else 1)
        self._total = {
            "in": TokenBucket(profile.total) if profile.total else None,
            "out": TokenBucket(profile.total) if profile.total else None,
        }

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _ShapedProtocol(factory(), self)

    def connection_buckets(self) -> dict[str, TokenBucket | None]:
        conn = self.profile.conn
        return {
            "in": TokenBucket(conn) if conn else None,
            "out": TokenBucket(conn) if conn else None,
        }

    def wait(self, own: TokenBucket | None, direction: str, n: int) -> float:
        """Seconds the connection must pause after moving ``n`` bytes in ``direction``."""
        waits = [b.take(n) for b in (own, self._total[direction]) if b is not None]
        return max(waits, default=0.0)


class _ShapedProtocol(asyncio.Protocol):
    """Stands between the transport and the server's protocol, pacing both directions."""

    def __init__(self, inner: asyncio.Protocol, link: Link) -> None:
        self._inner = inner
        self._link = link
        self._buckets = link.connection_buckets()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_event_loop()
        # Reading is paused while the link or the server asks; writing likewise.
        self._read_holds = {"link": False, "server": False}
        self._write_holds = {"link": False, "transport": False}
        self._timers: list[asyncio.TimerHandle] = []

    # --- from the transport ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is no asyncio.Transport subclass, yet it behaves as one.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._inner.connection_made(_ShapedTransport(transport, self))
        if self._link.handshake:
            self._hold_reading(self._link.handshake)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)
        wait = self._link.wait(self._buckets["in"], "in", len(data))
        if wait > 0:
            self._hold_reading(wait)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._set_write_hold("transport", True)

    def resume_writing(self) -> None:
        self._set_write_hold("transport", False)

    # --- from the server's protocol, through the shaped transport ---------------------------

    def replace_inner(self, protocol: asyncio.Protocol) -> None:
        self._inner = protocol

    def sent(self, n: int) -> None:
        wait = self._link.wait(self._buckets["out"], "out", n)
        if wait > 0 and not self._write_holds["link"]:
            self._set_write_hold("link", True)
            self._later(wait, lambda: self._set_write_hold("link", False))

    def server_reading(self, paused: bool) -> None:
        self._set_read_hold("server", paused)

    def server_reading_paused(self) -> bool:
        return self._read_holds["server"]

    # --- holds ----------------------------------------------------------------------------

    def _later(self, seconds: float, action: Callable[[], None]) -> None:
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self._loop.call_later(seconds, action))

    def _hold_reading(self, seconds: float) -> None:
        if self._read_holds["link"]:
            return  # already paused; the debt carries over to the next read
        self._set_read_hold("link", True)
        self._later(seconds, lambda: self._set_read_hold("link", False))

    def _set_read_hold(self, who: str, on: bool) -> None:
        before = any(self._read_holds.values())
        self._read_holds[who] = on
        after = any(self._read_holds.values())
        transport = self._transport
        if before == after or transport is None or transport.is_closing():
            return
        if after:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _set_write_hold(self, who: str, on: bool) -> None:
        before = any(self._write_holds.values())
        self._write_holds[who] = on
        after = any(self._write_holds.values())
        if before == after:
            return
        if after:
            self._inner.pause_writing()
        else:
            self._inner.resume_writing()


class _ShapedTransport(asyncio.Transport):
    """The transport as the server's protocol sees it: writes are counted, pauses merged."""

    def __init__(self, real: asyncio.Transport, shaper: _ShapedProtocol) -> None:
        super().__init__()
        self._real = real
        self._shaper = shaper

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._real.write(data)
        self._shaper.sent(len(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def pause_reading(self) -> None:
        self._shaper.server_reading(True)

    def resume_reading(self) -> None:
        self._shaper.server_reading(False)

    def is_reading(self) -> bool:
        return not self._shaper.server_reading_paused() and self._real.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def close(self) -> None:
        self._real.close()

    def abort(self) -> None:
        self._real.abort()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def write_eof(self) -> None:
        self._real.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._shaper

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # The shaper stays in between: the new protocol takes the old one's place behind it.
        self._shaper.replace_inner(cast(asyncio.Protocol, protocol))
