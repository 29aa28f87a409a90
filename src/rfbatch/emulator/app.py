"""The aiohttp application: routes, API-key check, fault injection and error rendering."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rfbatch.emulator import routes_jobs, routes_roboql, routes_staging, routes_transfer
from rfbatch.emulator.config import EmulatorConfig
from rfbatch.emulator.core import CORE_KEY, EmulatorCore, core_of
from rfbatch.emulator.faults import ROUTE_NAMES, SIGNED_ROUTES, Fault
from rfbatch.emulator.pagination import PageError
from rfbatch.emulator.responses import Problem, fail, ok
from rfbatch.emulator.routes_transfer import FAULT_KEY, hard_reset

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RETRY_AFTER_STATUSES = frozenset({429, 503})


async def workspace(request: web.Request) -> web.Response:
    return ok({"workspace": core_of(request).config.workspace})


def _error_key(request: web.Request) -> str:
    return "message" if request.path.startswith("/batch-processing/") else "error"


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    core = core_of(request)
    route = request.match_info.route.name
    key = _error_key(request)
    try:
        if route in ROUTE_NAMES and core.injector is not None:
            fault = core.injector.draw(route)
            if fault is not None:
                core.counters.faultsInjected += 1
                early = await _apply_fault(request, route, fault)
                if early is not None:
                    return early
                if fault.kind == "truncate" and route not in SIGNED_ROUTES:
                    return await _truncated(request, await handler(request))
        if route in ROUTE_NAMES and route not in SIGNED_ROUTES:
            refusal = _check_auth(request, core.config)
            if refusal is not None:
                return refusal
        return await handler(request)
    except Problem as problem:
        return fail(problem.status, problem.message, key=key, **problem.headers)
    except PageError as exc:
        return fail(400, str(exc), key=key)
    except web.HTTPNotFound:
        return fail(404, f"no route for {request.method} {request.path}", key=key)
    except web.HTTPMethodNotAllowed:
        return fail(405, f"method {request.method} not allowed here", key=key)


def _check_auth(request: web.Request, config: EmulatorConfig) -> web.Response | None:
    given = request.query.get("api_key", "")
    if not given or not hmac.compare_digest(given.encode(), config.api_key.encode()):
        return fail(401, "Unauthorized: missing or invalid api_key")
    ws = request.match_info.get("workspace")
    if ws is not None and ws != config.workspace:
        return fail(403, f"the api_key does not grant access to workspace {ws!r}")
    return None


async def _apply_fault(request: web.Request, route: str, fault: Fault) -> web.StreamResponse | None:
    """Answer for the fault, or None to go on (after stashing a mid-body fault for the handler)."""
    core = core_of(request)
    status = fault.status
    if status is not None:
        headers: dict[str, str] = {}
        if status in _RETRY_AFTER_STATUSES:
            assert core.injector is not None
            headers["Retry-After"] = str(core.injector.profile.retry_after)
        return fail(status, f"injected fault: HTTP {status}", key=_error_key(request), **headers)
    if fault.kind == "slow":
        assert core.injector is not None
        await asyncio.sleep(core.injector.profile.slow_seconds)
        return None
    if route in SIGNED_ROUTES:
        request[FAULT_KEY] = fault
        return None
    if fault.kind == "reset":
        hard_reset(request)
        return web.Response(status=500)
    return None


async def _truncated(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send the handler's answer with its full Content-Length but only part of the body."""
    if not isinstance(response, web.Response) or response.body is None:
        return response
    body = (
        response.body if isinstance(response.body, bytes) else bytes(response.text or "", "utf-8")
    )
    core = core_of(request)
    fraction = core.injector.profile.cut_fraction if core.injector is not None else 0.5
    out = web.StreamResponse(status=response.status, headers=response.headers)
    out.content_length = len(body)
    await out.prepare(request)
    await out.write(body[: int(len(body) * fraction)])
    if request.transport is not None:
        request.transport.close()
    return out


def _round_trip(rtt: float) -> Any:
    """Every answer waits one round trip of the shaped link (request out, answer back)."""

    @web.middleware
    async def delayed(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(rtt)
        return await handler(request)

    return delayed


def create_app(config: EmulatorConfig) -> web.Application:
    """A fresh emulator application; its state lives as long as the app."""
    middlewares: list[Any] = [api_middleware]
    if config.link is not None and config.link.rtt > 0:
        middlewares.insert(0, _round_trip(config.link.rtt))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024**2)
    core = EmulatorCore(config)
    app[CORE_KEY] = core
    app.router.add_get("/", workspace, name="workspace")
    routes_staging.add_routes(app)
    routes_jobs.add_routes(app)
    routes_transfer.add_routes(app)
    routes_roboql.add_routes(app)

    async def on_startup(_: web.Application) -> None:
        await core.start()

    async def on_cleanup(_: web.Application) -> None:
        await core.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
