"""Opaque, tamper-evident page tokens over append-only lists.

A token names the listing it belongs to and the index where the next page starts. Lists only
grow at the end, so an index stays a valid cursor while new items arrive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class PageError(ValueError):
    """A bad ``pageSize`` or ``nextPageToken``; the route answers 400."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str | None


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, raw: bytes) -> str:
        return hmac.new(self._secret, raw, hashlib.sha256).hexdigest()[:16]

    def encode(self, listing: str, index: int) -> str:
        raw = json.dumps({"l": listing, "i": index}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return f"{body}.{self._mac(raw)}"

    def decode(self, listing: str, token: str) -> int:
        body, _, mac = token.partition(".")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise PageError("invalid nextPageToken") from exc
        if not mac or not hmac.compare_digest(mac, self._mac(raw)):
            raise PageError("invalid nextPageToken")
        data = json.loads(raw)
        if data.get("l") != listing or not isinstance(data.get("i"), int) or data["i"] < 0:
            raise PageError("nextPageToken does not belong to this listing")
        index: int = data["i"]
        return index

    def page(
        self,
        listing: str,
        seq: Sequence[T],
        *,
        token: str | None,
        page_size: str | None,
        keep: Callable[[T], bool] | None = None,
        newest_first: bool = False,
    ) -> Page[T]:
        """One page of ``seq`` (optionally filtered by ``keep``).

        With ``newest_first`` the index counts from the oldest element, so items added later
        never shift a page that is already being walked.
        """
        size = parse_page_size(page_size)
        index = self.decode(listing, token) if token else (len(seq) - 1 if newest_first else 0)
        out: list[T] = []
        step = -1 if newest_first else 1
        while 0 <= index < len(seq) and len(out) < size:
            element = seq[index]
            index += step
            if keep is None or keep(element):
                out.append(element)
        more = 0 <= index < len(seq)
        if more and keep is not None:
            # Peek for one more match so the last page never hands out a useless token.
            probe = index
            while 0 <= probe < len(seq) and not keep(seq[probe]):
                probe += step
            more = 0 <= probe < len(seq)
            index = probe
        return Page(out, self.encode(listing, index) if more else None)


def parse_page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError as exc:
        raise PageError("pageSize must be an integer") from exc
    if size < 1:
        raise PageError("pageSize must be at least 1")
    return min(size, MAX_PAGE_SIZE)
