"""The control plane: a typed async client of the Roboflow Batch Processing API."""

from __future__ import annotations

from rfbatch.api.client import RoboflowClient
from rfbatch.api.config import ClientConfig
from rfbatch.api.pagination import Page, Paginator
from rfbatch.http.policy import RetryPolicy
from rfbatch.http.retry import RetryEvent, RetryHook

__all__ = [
    "ClientConfig",
    "Page",
    "Paginator",
    "RetryEvent",
    "RetryHook",
    "RetryPolicy",
    "RoboflowClient",
]
