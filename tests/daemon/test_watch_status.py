"""A watcher out of inotify watches shows in /readyz (as a note: the daemon still finds files,
by polling, so it stays ready) and in /metrics."""

from __future__ import annotations

import aiohttp

from rfbatch.localfs.watch import WatchStatus
from rfbatch.obs.health import Readiness, health_app, serve_http
from rfbatch.obs.metrics import Metrics, MetricsSnapshot


async def _ok() -> None:
    return None


async def test_polling_for_want_of_watches_is_a_note_in_readyz_and_a_gauge() -> None:
    status = WatchStatus()

    def notes() -> dict[str, str]:
        return {"watch": status.problem} if status.problem else {}

    app = health_app(
        Readiness({"api": _ok}, notes=notes),
        Metrics(
            lambda: MetricsSnapshot(
                watch_polling=status.polling, watch_limit_reached=status.problem is not None
            )
        ),
    )
    async with serve_http(app, "127.0.0.1", 0) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/readyz") as resp:
            assert (resp.status, await resp.json()) == (
                200,
                {"ready": True, "checks": {"api": "ok"}},
            )
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
            assert "rfbatch_watch_polling 0.0" in text
            assert "rfbatch_watch_limit_reached 0.0" in text

        # [scan] events = false: polling by choice, not for want of watches.
        status.polling = True
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
            assert "rfbatch_watch_polling 1.0" in text
            assert "rfbatch_watch_limit_reached 0.0" in text

        status.polling, status.problem = True, "out of inotify watches (...)"
        async with http.get(f"{url}/readyz") as resp:
            body = await resp.json()
            assert (resp.status, body["ready"]) == (200, True)
            assert body["notes"] == {"watch": "out of inotify watches (...)"}
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
            assert "rfbatch_watch_polling 1.0" in text
            assert "rfbatch_watch_limit_reached 1.0" in text
