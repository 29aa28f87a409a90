"""A gate that tasks wait at while it is closed (intake pauses while the disk is low)."""

from __future__ import annotations

import anyio


class Gate:
    def __init__(self, *, open_: bool = True) -> None:
        self._opened = anyio.Event()
        if open_:
            self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self) -> None:
        self._opened.set()

    def close(self) -> None:
        # An anyio.Event cannot be cleared: closing swaps in a fresh one for new waiters.
        if self._opened.is_set():
            self._opened = anyio.Event()

    async def wait_open(self) -> None:
        while not self._opened.is_set():
            await self._opened.wait()
