from __future__ import annotations

import pytest

from rfbatch.api.pagination import Page, Paginator
from rfbatch.errors import DecodeError


def pages_of(*pages: tuple[list[int], str | None]) -> tuple[Paginator[int], list[str | None]]:
    """A paginator over canned pages, keyed by the token that asks for them."""
    by_token: dict[str | None, Page[int]] = {}
    token: str | None = None
    for items, following in pages:
        by_token[token] = Page(items, following)
        token = following
    asked: list[str | None] = []

    async def fetch(tok: str | None) -> Page[int]:
        asked.append(tok)
        return by_token[tok]

    return Paginator("list_things", fetch), asked


async def test_items_across_pages_send_each_token_back() -> None:
    paginator, asked = pages_of(([1, 2], "t1"), ([3], "t2"), ([4, 5], None))
    assert [i async for i in paginator] == [1, 2, 3, 4, 5]
    assert asked == [None, "t1", "t2"]


async def test_pages_are_a_fresh_walk_each_time() -> None:
    paginator, asked = pages_of(([1], "a"), ([2], ""))
    first = [p.items async for p in paginator.pages()]
    second = [p.items async for p in paginator.pages()]
    assert first == second == [[1], [2]]
    assert asked == [None, "a", None, "a"]


async def test_missing_token_ends_the_walk() -> None:
    paginator, asked = pages_of(([7], None))
    assert await paginator.collect() == [7]
    assert asked == [None]


async def test_repeated_token_raises_decode_error_naming_the_endpoint() -> None:
    calls = 0

    async def fetch(token: str | None) -> Page[int]:
        nonlocal calls
        calls += 1
        return Page([calls], "same-token")

    with pytest.raises(DecodeError, match="list_things"):
        await Paginator("list_things", fetch).collect()
    assert calls == 2


async def test_token_cycle_is_caught_too() -> None:
    tokens = {None: "a", "a": "b", "b": "a"}

    async def fetch(token: str | None) -> Page[str]:
        return Page([str(token)], tokens[token])

    seen: list[str] = []

    async def walk() -> None:
        async for item in Paginator("cycle", fetch):
            seen.append(item)

    with pytest.raises(DecodeError):
        await walk()
    assert seen == ["None", "a", "b"]


async def test_collect_with_limit_stops_early() -> None:
    paginator, asked = pages_of(([1, 2], "t1"), ([3], None))
    assert await paginator.collect(limit=2) == [1, 2]
    assert asked == [None]
