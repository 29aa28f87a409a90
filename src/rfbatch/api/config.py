"""Small frozen settings for the API client: how to reach the service and how hard to retry."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rfbatch import __version__
from rfbatch.errors import ConfigError
from rfbatch.http.policy import RetryPolicy
from rfbatch.ids import validate_api_key
from rfbatch.redact import MASK
from rfbatch.settings import REGIONAL_BASE_URLS, regional_choice

DEFAULT_BASE_URL = "https://api.roboflow.com"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
ENV_API_KEY = "ROBOFLOW_API_KEY"
ENV_BASE_URL = "API_BASE_URL"


def _default_user_agent() -> str:
    return f"rfbatch/{__version__}"


@dataclass(frozen=True, repr=False)
class ClientConfig:
    """What :class:`~rfbatch.api.client.RoboflowClient` needs; the key never shows in a repr."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrent_requests: int = 16
    user_agent: str = field(default_factory=_default_user_agent)
    ca_bundle: Path | None = None
    # The most bytes read from one API response: listings are pages, so anything near this is
    # a misbehaving server, not data (signed-URL downloads do not go through this client).
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_key", validate_api_key(self.api_key))
        base = self.base_url.strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"{ENV_BASE_URL} must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"{ENV_BASE_URL} must not carry a query string or fragment")
        # The contract concatenates paths onto the base URL, so it must end without a slash.
        object.__setattr__(self, "base_url", base)
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("connect_timeout and read_timeout must be > 0 seconds")
        if self.max_response_bytes < 1024:
            raise ConfigError(f"max_response_bytes must be >= 1024, got {self.max_response_bytes}")
        if self.max_concurrent_requests < 1:
            raise ConfigError(
                f"max_concurrent_requests must be >= 1, got {self.max_concurrent_requests}"
            )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={MASK!r}" if f.name == "api_key" else f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"ClientConfig({shown})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Build a config from ``ROBOFLOW_API_KEY`` and ``API_BASE_URL`` (else the address of
        ``ROBOFLOW_REGION`` / ``ROBOFLOW_ENVIRONMENT``, as the settings resolve it); ``overrides``
        win."""
        env = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown client setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        values["api_key"] = validate_api_key(overrides.pop("api_key", None) or env.get(ENV_API_KEY))
        base_url = env.get(ENV_BASE_URL, "").strip()
        if base_url:
            values["base_url"] = base_url
        elif (choice := regional_choice(env)) is not None:
            values["base_url"] = REGIONAL_BASE_URLS[choice[:2]]
        values.update(overrides)
        return cls(**values)
