"""Seedable fault injection for the emulator.

A :class:`FaultProfile` gives, per route, the probability of each kind of fault. Every request to
a faultable route draws exactly one number from a ``random.Random(seed)`` owned by the running
emulator, so a run of sequential requests sees the same faults every time.

Fault kinds
-----------
``status_408``, ``status_429``, ``status_500``, ``status_502``, ``status_503``, ``status_504``
    Answer with that status and ``{"error": "injected fault ..."}`` instead of handling the request.
    429 and 503 carry ``Retry-After: <retry_after>``.
``reset``
    Cut the connection with a TCP reset. On ``put``: after reading ``cut_fraction`` of the request
    body (nothing is stored). On ``download``: after sending ``cut_fraction`` of the response body.
    Elsewhere: before any response byte.
``slow``
    Wait ``slow_seconds`` before handling the request normally.
``truncate``
    Announce the full ``Content-Length``, send only ``cut_fraction`` of the body, then close.
    Applies to every route that answers with a body (not ``put``).
``expire``
    Refuse a signed URL with 403 as if it had expired. Applies to ``put`` and ``download`` only.

Route names (stable)
--------------------
``workspace``, ``list_batches``, ``batch``, ``count``, ``parts``, ``list_files``, ``shards``,
``upload_image``, ``video_url``, ``shard_url``, ``image_references``, ``video_references``,
``list_jobs``, ``jobs_start``, ``job_status``, ``job_stages``, ``job_tasks``, ``job_abort``,
``job_restart``, ``job_logs``, ``put`` (signed-URL uploads) and ``download`` (signed-URL
downloads); ``"*"`` means every route. The state endpoint ``/_emulator/state`` is never faulted.

A route's own rates override ``"*"`` kind by kind: with ``"*" = {status_429 = 0.1}`` and
``put = {reset = 0.2}``, a PUT sees 10 % 429s and 20 % resets. The rates of one route must add up
to at most 1.

TOML format
-----------
::

    seed = 42               # int; same seed, same faults
    retry_after = 1         # seconds sent in Retry-After with 429 and 503
    slow_seconds = 0.5      # delay of a "slow" fault
    cut_fraction = 0.5      # share of the body sent/read before "reset" or "truncate"

    [routes."*"]
    status_429 = 0.05

    [routes.put]
    reset = 0.1
    status_503 = 0.05

    [routes.download]
    truncate = 0.1
    expire = 0.02

The same profile in Python::

    FaultProfile(
        routes={"*": FaultRates(status_429=0.05), "put": FaultRates(reset=0.1, status_503=0.05)},
        seed=42,
    )
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

FAULT_KINDS: tuple[str, ...] = (
    "status_408",
    "status_429",
    "status_500",
    "status_502",
    "status_503",
    "status_504",
    "reset",
    "slow",
    "truncate",
    "expire",
)

ROUTE_NAMES: frozenset[str] = frozenset(
    {
        "workspace",
        "list_batches",
        "batch",
        "count",
        "parts",
        "list_files",
        "shards",
        "upload_image",
        "video_url",
        "shard_url",
        "image_references",
        "video_references",
        "roboql_ingest",
        "list_jobs",
        "jobs_start",
        "job_status",
        "job_stages",
        "job_tasks",
        "job_abort",
        "job_restart",
        "job_logs",
        "put",
        "download",
    }
)

SIGNED_ROUTES: frozenset[str] = frozenset({"put", "download"})


@dataclass(frozen=True)
class FaultRates:
    """Probability of each fault kind on one route; ``None`` means "inherit from '*'"."""

    status_408: float | None = None
    status_429: float | None = None
    status_500: float | None = None
    status_502: float | None = None
    status_503: float | None = None
    status_504: float | None = None
    reset: float | None = None
    slow: float | None = None
    truncate: float | None = None
    expire: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {f.name}={value} is outside 0..1")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultRates:
        unknown = set(data) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
        return cls(**{k: float(v) for k, v in data.items()})

    def over(self, base: FaultRates) -> FaultRates:
        """These rates, with every unset kind taken from ``base``."""
        merged = {
            kind: getattr(self, kind) if getattr(self, kind) is not None else getattr(base, kind)
            for kind in FAULT_KINDS
        }
        return FaultRates(**merged)

    def get(self, kind: str) -> float:
        value: float | None = getattr(self, kind)
        return value or 0.0


@dataclass(frozen=True)
class Fault:
    """One fault drawn for one request."""

    kind: str

    @property
    def status(self) -> int | None:
        if self.kind.startswith("status_"):
            return int(self.kind.removeprefix("status_"))
        return None


@dataclass(frozen=True)
class FaultProfile:
    """Per-route fault rates plus the knobs of each fault; see the module docstring."""

    routes: Mapping[str, FaultRates] = field(default_factory=dict)
    seed: int = 0
    retry_after: int = 1
    slow_seconds: float = 0.5
    cut_fraction: float = 0.5

    def __post_init__(self) -> None:
        unknown = set(self.routes) - ROUTE_NAMES - {"*"}
        if unknown:
            raise ValueError(f"unknown fault route(s): {', '.join(sorted(unknown))}")
        if not 0.0 <= self.cut_fraction < 1.0:
            raise ValueError("cut_fraction must be in [0, 1)")
        if self.retry_after < 0 or self.slow_seconds < 0:
            raise ValueError("retry_after and slow_seconds must not be negative")
        for route in ROUTE_NAMES:
            total = sum(self.rates_for(route).get(kind) for kind in FAULT_KINDS)
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault rates for route {route!r} add up to {total:.3f} > 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultProfile:
        known = {"seed", "retry_after", "slow_seconds", "cut_fraction", "routes"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault profile key(s): {', '.join(sorted(unknown))}")
        routes_raw = data.get("routes", {})
        if not isinstance(routes_raw, Mapping):
            raise ValueError("'routes' must be a table of route name -> rates")
        routes = {name: FaultRates.from_mapping(rates) for name, rates in routes_raw.items()}
        return cls(
            routes=routes,
            seed=int(data.get("seed", 0)),
            retry_after=int(data.get("retry_after", 1)),
            slow_seconds=float(data.get("slow_seconds", 0.5)),
            cut_fraction=float(data.get("cut_fraction", 0.5)),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> FaultProfile:
        with Path(path).open("rb") as fh:
            return cls.from_dict(tomllib.load(fh))

    def rates_for(self, route: str) -> FaultRates:
        base = self.routes.get("*", FaultRates())
        own = self.routes.get(route)
        rates = own.over(base) if own is not None else base
        # Kinds that mean nothing on a route are dropped, so they never eat a draw.
        drop: dict[str, float] = {}
        if route not in SIGNED_ROUTES:
            drop["expire"] = 0.0
        if route == "put":
            drop["truncate"] = 0.0
        return FaultRates(**{**{k: rates.get(k) for k in FAULT_KINDS}, **drop})


class FaultInjector:
    """Draws faults for requests from one seeded RNG; lives as long as the profile is set."""

    def __init__(self, profile: FaultProfile) -> None:
        self.profile = profile
        self._rng = random.Random(profile.seed)
        self._rates: dict[str, FaultRates] = {r: profile.rates_for(r) for r in ROUTE_NAMES}

    def draw(self, route: str) -> Fault | None:
        rates = self._rates.get(route)
        if rates is None:
            return None
        roll = self._rng.random()
        acc = 0.0
        for kind in FAULT_KINDS:
            acc += rates.get(kind)
            if roll < acc:
                return Fault(kind)
        return None
