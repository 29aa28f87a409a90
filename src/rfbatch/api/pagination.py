"""Walk a paginated listing (contract 1.3): ``pageSize`` in, ``nextPageToken`` back and forth.

A listing ends when the token comes back null, missing or empty. A token the server already sent
would make the walk loop forever, so it is a :class:`~rfbatch.errors.DecodeError` instead; so is
a long run of empty pages that each hand out a fresh token (a server paging through nothing,
forever).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from rfbatch.errors import DecodeError

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_page_token`` is ``None`` on the last page."""

    items: list[T]
    next_page_token: str | None


FetchPage = Callable[[str | None], Awaitable[Page[T]]]

# A real listing may return an empty page now and then; this many in a row is a loop.
MAX_EMPTY_PAGES = 100


class Paginator(AsyncIterator[T]):
    """An async iterator over the items of a listing, fetching pages lazily.

    ``fetch(token)`` returns one page; it is called with ``None`` first. Iterating the paginator
    yields items; :meth:`pages` yields whole pages instead (each call starts a fresh walk), which
    lets a consumer prefetch pages while it works through the items of earlier ones.
    """

    def __init__(
        self, endpoint: str, fetch: FetchPage[T], *, max_empty_pages: int = MAX_EMPTY_PAGES
    ) -> None:
        self.endpoint = endpoint
        self._fetch = fetch
        self._max_empty = max_empty_pages
        self._items: AsyncGenerator[T, None] | None = None

    def __repr__(self) -> str:
        return f"<Paginator {self.endpoint}>"

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        seen: set[str] = set()
        token: str | None = None
        empty_run = 0
        while True:
            page = await self._fetch(token)
            yield page
            following = page.next_page_token
            if not following:
                return
            if following in seen:
                raise DecodeError(
                    f"{self.endpoint}: the server sent a page token it had already sent; "
                    "stopping instead of looping"
                )
            empty_run = 0 if page.items else empty_run + 1
            if empty_run >= self._max_empty:
                raise DecodeError(
                    f"{self.endpoint}: the server sent {empty_run} empty pages in a row, each "
                    "with another page token; stopping instead of looping"
                )
            seen.add(following)
            token = following

    async def _walk_items(self) -> AsyncGenerator[T, None]:
        pages = self.pages()
        try:
            async for page in pages:
                for item in page.items:
                    yield item
        finally:
            await pages.aclose()

    def __aiter__(self) -> Paginator[T]:
        return self

    async def __anext__(self) -> T:
        if self._items is None:
            self._items = self._walk_items()
        return await self._items.__anext__()

    async def aclose(self) -> None:
        """Stop a walk early and release what it holds."""
        if self._items is not None:
            await self._items.aclose()

    async def collect(self, limit: int | None = None) -> list[T]:
        """All items (or the first ``limit``) in a list; for small listings and tests."""
        out: list[T] = []
        async for item in self:
            out.append(item)
            if limit is not None and len(out) >= limit:
                await self.aclose()
                break
        return out
