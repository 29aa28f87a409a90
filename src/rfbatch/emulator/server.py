"""Running the emulator: in the current loop, in a daemon thread, or as a blocking server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

from aiohttp import web

from rfbatch.emulator.app import create_app
from rfbatch.emulator.config import EmulatorConfig
from rfbatch.emulator.core import CORE_KEY, EmulatorCore
from rfbatch.emulator.faults import FaultProfile
from rfbatch.emulator.link import Link

T = TypeVar("T")
_START_TIMEOUT = 30.0


class Emulator:
    """A handle on a running emulator.

    Every method can be called from the emulator's own loop or from any other thread (the call
    is then run on the emulator's loop and waited for).

    Test hooks besides :meth:`state` and :meth:`set_faults`:

    * :meth:`expire_urls`: every signed URL issued so far answers 403 as expired.
    * :meth:`fail_job`: end a running job now as failed (like a ``fail*`` workflow id does).
    """

    def __init__(self, base_url: str, config: EmulatorConfig, core: EmulatorCore) -> None:
        self.base_url = base_url
        self.config = config
        self._core = core
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"Emulator(base_url={self.base_url!r})"

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return fn()

        async def run() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout=_START_TIMEOUT)

    def state(self) -> dict[str, Any]:
        """The same JSON as ``GET /_emulator/state``."""
        return self._call(self._core.snapshot)

    def set_faults(self, profile: FaultProfile | None) -> None:
        """Replace the fault profile (its RNG restarts from the profile's seed)."""
        self._call(lambda: self._core.set_faults(profile))

    def expire_urls(self) -> None:
        self._call(self._core.signer.expire_all)

    def fail_job(self, job_id: str, message: str = "failed by a test hook") -> None:
        def fail() -> None:
            job = self._core.jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            self._core.jobs.fail_now(job, message)

        self._call(fail)


@asynccontextmanager
async def running_emulator(config: EmulatorConfig) -> AsyncIterator[Emulator]:
    """Serve the emulator on the current event loop for the duration of the block."""
    app = create_app(config)
    # A short shutdown grace: an upload cut off by a stop is retried by its client anyway.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    ssl_context = config.tls.server_context() if config.tls is not None else None
    server: asyncio.Server | None = None
    try:
        if config.link is None:
            site = web.TCPSite(
                runner, config.host, config.port, reuse_address=True, ssl_context=ssl_context
            )
            await site.start()
            port = _bound_port(runner, config.port)
        else:
            # The shaped link stands between each connection and aiohttp's own protocol.
            link = Link(config.link, tls=ssl_context is not None)
            handlers = runner.server
            assert handlers is not None  # set up above
            server = await asyncio.get_running_loop().create_server(
                link.wrap(cast(Callable[[], asyncio.Protocol], handlers)),
                config.host,
                config.port,
                ssl=ssl_context,
                reuse_address=True,
            )
            port = int(server.sockets[0].getsockname()[1])
        host = f"[{config.host}]" if ":" in config.host else config.host
        scheme = "https" if ssl_context is not None else "http"
        yield Emulator(f"{scheme}://{host}:{port}", config, app[CORE_KEY])
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return fallback


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    return loop


@contextmanager
def emulator_in_thread(config: EmulatorConfig) -> Iterator[Emulator]:
    """Run the emulator on its own loop in a daemon thread; for sync code and subprocess peers."""
    ready: concurrent.futures.Future[Emulator] = concurrent.futures.Future()
    loop = _new_loop()
    stop_async: list[asyncio.Event] = []

    async def main() -> None:
        stop_event = asyncio.Event()
        stop_async.append(stop_event)
        try:
            async with running_emulator(config) as emu:
                ready.set_result(emu)
                await stop_event.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(BaseException):
            loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="rfbatch-emulator", daemon=True)
    thread.start()
    try:
        emu = ready.result(timeout=_START_TIMEOUT)
        yield emu
    finally:
        if stop_async and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_async[0].set)
        thread.join(timeout=_START_TIMEOUT)


def serve(config: EmulatorConfig) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly; prints the URL as its first line."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_emulator(config) as emu:
            sys.stdout.write(f"rfbatch emulator listening on {emu.base_url}\n")
            sys.stdout.flush()
            await stop.wait()

    loop = _new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
