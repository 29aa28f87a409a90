"""Reading a response body with a bound: a misbehaving server must not fill memory."""

from __future__ import annotations

import aiohttp

ERROR_BODY_BYTES = 64 * 1024  # an error body is only quoted, and only in part
_READ_CHUNK = 64 * 1024


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The (decoded) body, or ``None`` once it runs past ``limit`` bytes.

    Counted on what is read, not on ``Content-Length`` alone: a chunked or compressed body
    announces nothing true about its size.
    """
    if resp.content_length is not None and resp.content_length > limit:
        return None
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


async def read_head(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body; the rest is left unread."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
