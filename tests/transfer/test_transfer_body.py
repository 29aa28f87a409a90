from __future__ import annotations

from rfbatch.transfer import BodySource, BytesBody


async def collect(body: BodySource) -> bytes:
    return b"".join([chunk async for chunk in body.chunks()])


async def test_bytes_body_is_re_iterable_in_chunks() -> None:
    data = bytes(range(256)) * 10
    body = BytesBody(data, chunk_size=1000)
    assert isinstance(body, BodySource)
    assert body.length == len(data)
    sizes = [len(c) async for c in body.chunks()]
    assert sizes == [1000, 1000, 560]
    assert await collect(body) == await collect(body) == data
    assert await collect(BytesBody(b"")) == b""
