"""Webhook delivery: POST JSON with ``Authorization: Bearer <publishable key>``, bounded retries.

Every payload gets a fresh ``event_id``; each retry of it carries the same ``event_id`` and an
incremented ``delivery_attempt`` (starting at 1), as the real service's payloads imply.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from rfbatch.emulator.model import Counters, iso, utcnow
from rfbatch.emulator.tasks import TaskSet
from rfbatch.redact import redact_url

_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=5)
_BACKOFF_BASE = 0.05
_BACKOFF_MAX = 1.0


@dataclass
class Delivery:
    """One webhook event as the state endpoint shows it."""

    event_id: str
    type: str
    url: str
    attempts: int = 0
    delivered: bool = False
    last_status: int | None = None
    created: str = ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "type": self.type,
            "url": redact_url(self.url),
            "attempts": self.attempts,
            "delivered": self.delivered,
            "lastStatus": self.last_status,
            "created": self.created,
        }


class WebhookSender:
    def __init__(
        self,
        *,
        bearer: str,
        attempts: int,
        counters: Counters,
        tasks: TaskSet,
        session: aiohttp.ClientSession,
    ) -> None:
        self._bearer = bearer
        self._attempts = max(1, attempts)
        self._counters = counters
        self._tasks = tasks
        self._session = session
        self.deliveries: list[Delivery] = []

    def send(self, url: str, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (without ``event_id``/``delivery_attempt``) for ``url``."""
        delivery = Delivery(
            event_id=str(uuid.uuid4()),
            type=str(payload.get("type", "")),
            url=url,
            created=iso(utcnow()),
        )
        self.deliveries.append(delivery)
        self._tasks.spawn(self._deliver(delivery, payload))

    async def _deliver(self, delivery: Delivery, payload: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self._bearer}"}
        for attempt in range(1, self._attempts + 1):
            delivery.attempts = attempt
            body = {**payload, "event_id": delivery.event_id, "delivery_attempt": attempt}
            try:
                async with self._session.post(
                    delivery.url, json=body, headers=headers, timeout=_TIMEOUT
                ) as resp:
                    delivery.last_status = resp.status
                    if 200 <= resp.status < 300:
                        delivery.delivered = True
                        self._counters.webhooksSent += 1
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                delivery.last_status = None
            if attempt < self._attempts:
                await asyncio.sleep(min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (attempt - 1)))
        self._counters.webhooksFailed += 1
