"""The emulator's one frozen configuration object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rfbatch.emulator.faults import FaultProfile
from rfbatch.emulator.link import LinkProfile
from rfbatch.emulator.tls import TlsFiles


@dataclass(frozen=True)
class EmulatorConfig:
    """How one emulator instance behaves.

    ``api_key`` and ``publishable_key`` are kept out of the repr so that a logged config never
    leaks them. ``check_image_content`` makes tar ingest fail a member whose bytes are not an
    image (``invalid-image-content``), as the real service does once it decodes it; it is off
    by default so that tests may send any bytes under an image name.
    """

    api_key: str = field(default="emulator-key", repr=False)
    workspace: str = "emulator-ws"
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path | None = None
    store: Literal["files", "digests"] = "files"
    faults: FaultProfile | None = None
    ingest_delay: float = 0.0
    job_tick: float = 0.05
    url_ttl: float = 3600.0
    max_image_bytes: int = 20 * 1024 * 1024
    publishable_key: str | None = field(default=None, repr=False)
    webhook_attempts: int = 3
    check_image_content: bool = False
    # Lenient: accept http:// reference URLs (the official client refuses them, contract 3.10);
    # tests that serve references from a plain-HTTP loopback server turn it on.
    allow_http_references: bool = False
    # Seeds the shard status words (``None``: a fresh draw per instance).
    vocabulary_seed: int | None = None
    # The largest body a signed URL takes (GCS's content-length range, bound in the signature);
    # a PUT over it answers 400 EntityTooLarge, as GCS does (413, as other stores and proxies
    # answer, with ``too_large_status = 413``).
    max_upload_bytes: int = 5 * 1024**3
    too_large_status: int = 400
    # HTTPS with this certificate and key (the API and the signed URLs alike).
    tls: TlsFiles | None = None
    # A shaped link in front of it: round trips and bandwidth (see emulator/link.py).
    link: LinkProfile | None = None

    @property
    def webhook_bearer(self) -> str:
        """The token job and ingest webhooks carry in ``Authorization: Bearer ...``."""
        return self.publishable_key or f"rf_{self.workspace}"
