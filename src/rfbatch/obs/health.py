"""The daemon's local HTTP server: liveness, readiness, metrics, and a mount for webhooks.

``/healthz`` answers while the event loop runs. ``/readyz`` runs the readiness checks (each
bounded by a timeout, results cached for a moment so a busy prober cannot hammer the API) and
answers 503 with the failing checks named. ``/metrics`` is the Prometheus exposition. It binds
127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from aiohttp import web

from rfbatch.errors import ConfigError
from rfbatch.obs.metrics import CONTENT_TYPE, Metrics

Check = Callable[[], Awaitable[None]]  # raises (anything) when not ready

CHECK_TIMEOUT = 5.0
CACHE_SECONDS = 2.0


@dataclass
class Readiness:
    checks: Mapping[str, Check]
    notes: Callable[[], dict[str, str]] | None = None
    """Conditions worth reporting that do not make the daemon unready (polling for files)."""
    _cached: tuple[float, dict[str, str]] | None = field(default=None, init=False)

    async def run(self) -> dict[str, str]:
        """``{check: "ok" | reason}`` for every check."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        results: dict[str, str] = {}

        async def one(name: str, check: Check) -> None:
            try:
                with anyio.fail_after(CHECK_TIMEOUT):
                    await check()
                results[name] = "ok"
            except TimeoutError:
                results[name] = f"no answer within {CHECK_TIMEOUT:.0f} s"
            except Exception as exc:  # a failing check is a verdict, not a crash
                results[name] = f"{type(exc).__name__}: {exc}"[:300]

        async with anyio.create_task_group() as tg:
            for name, check in self.checks.items():
                tg.start_soon(one, name, check)
        self._cached = (time.monotonic(), results)
        return results


def health_app(
    readiness: Readiness,
    metrics: Metrics,
    *,
    before_metrics: Callable[[], Awaitable[None]] | None = None,
    mounts: list[Callable[[web.Application], None]] | None = None,
) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        results = await readiness.run()
        ready = all(v == "ok" for v in results.values())
        body: dict[str, object] = {"ready": ready, "checks": results}
        if readiness.notes is not None and (notes := readiness.notes()):
            body["notes"] = notes
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        if before_metrics is not None:
            await before_metrics()
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    for mount in mounts or []:
        mount(app)
    return app


@asynccontextmanager
async def serve_http(
    app: web.Application, host: str, port: int, *, setting: str = "[daemon] http_listen"
) -> AsyncIterator[str]:
    """Serve ``app`` on host:port (port 0 picks one); yields the base URL.

    An address that cannot be bound (in use, not local, not permitted) is a
    :class:`~rfbatch.errors.ConfigError` naming the address and the ``setting`` that chose it:
    under systemd a traceback here would only restart into the same failure.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot listen on {host}:{port} ({setting}): {reason}") from None
        bound = next(
            (int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port
        )
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        # Shielded: a cancelled caller must still close the socket, bound or not.
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
