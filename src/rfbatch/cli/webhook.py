"""The webhook receiver of the commands that follow jobs (sync, run, job wait)."""

from __future__ import annotations

from rfbatch.api import RoboflowClient
from rfbatch.settings import WebhookSettings
from rfbatch.webhooks import RecordEvent, WebhookReceiver


async def webhook_receiver(
    settings: WebhookSettings, client: RoboflowClient, record_event: RecordEvent
) -> WebhookReceiver:
    """A receiver expecting the configured Authorization header, else the service's default
    for the workspace (``Bearer rf_<workspace>``); an empty setting counts as unset, so that a
    request without the header is never taken for an authorized one."""
    expected = settings.authorization
    authorization = (
        expected.get_secret_value() if expected else f"Bearer rf_{await client.workspace()}"
    )
    return WebhookReceiver(authorization, settings.max_body_bytes, record_event)
