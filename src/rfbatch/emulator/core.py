"""The one object that holds a running emulator's state, shared by every route."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog
from aiohttp import web

from rfbatch.emulator import persist
from rfbatch.emulator.config import EmulatorConfig
from rfbatch.emulator.faults import FaultInjector, FaultProfile
from rfbatch.emulator.job_engine import JobEngine
from rfbatch.emulator.job_model import Job
from rfbatch.emulator.model import Counters, ShardVocabulary, Store
from rfbatch.emulator.pagination import PageTokens
from rfbatch.emulator.signing import UrlSigner
from rfbatch.emulator.tasks import TaskSet
from rfbatch.emulator.webhooks import WebhookSender

log = structlog.get_logger("rfbatch.emulator")

# The GCS-style constraint every upload URL carries and every PUT must echo.
LENGTH_RANGE_HEADER = "x-goog-content-length-range"


@dataclass
class UploadIntent:
    """What a minted upload URL is for."""

    token: str
    kind: str  # "video" | "shard"
    batch_id: str
    file_name: str | None
    shard_id: str | None
    extension_headers: dict[str, str] = field(default_factory=dict)


class EmulatorCore:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(ShardVocabulary.drawn(config.vocabulary_seed))
        self.signer = UrlSigner(config.url_ttl)
        self.tokens = PageTokens(secrets.token_bytes(16))
        self.counters = Counters()
        self.injector: FaultInjector | None = None
        self.set_faults(config.faults)
        self.tasks = TaskSet()
        # Upload consumers hold a thread for a whole body; keep them off anyio's default pool.
        self.pipe_limiter = anyio.CapacityLimiter(64)
        self.io_limiter = anyio.CapacityLimiter(16)
        self.uploads: dict[str, UploadIntent] = {}
        self.reference_ingests: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs = JobEngine(self)
        self._tmp_root: Path | None = None
        self._state_dir: Path | None = None
        self._session: aiohttp.ClientSession | None = None
        self._webhooks: WebhookSender | None = None

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.state_dir is None:
            self._tmp_root = Path(
                await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="rfbatch-emu-"))
            )
            self._state_dir = self._tmp_root
        else:
            self._state_dir = Path(self.config.state_dir)
        for sub in ("blobs", "outputs"):
            await anyio.Path(self._state_dir / sub).mkdir(parents=True, exist_ok=True)
        to_resume = await self._restore() if self.persistent else []
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=5)
        )
        self._webhooks = WebhookSender(
            bearer=self.config.webhook_bearer,
            attempts=self.config.webhook_attempts,
            counters=self.counters,
            tasks=self.tasks,
            session=self._session,
        )
        for job in to_resume:
            self.jobs.resume(job)

    async def stop(self) -> None:
        await self.tasks.close()
        if self._session is not None:
            await self._session.close()
        if self.persistent and self._state_dir is not None:
            data = persist.dump(self)
            path = self._state_dir / persist.STATE_FILE
            await anyio.to_thread.run_sync(persist.write_file, path, data)
        if self._tmp_root is not None:
            root = self._tmp_root
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))

    async def _restore(self) -> list[Job]:
        path = self.state_dir / persist.STATE_FILE
        try:
            data = await anyio.to_thread.run_sync(persist.read_file, path)
            to_resume = persist.load(self, data) if data is not None else []
        except (ValueError, KeyError, TypeError) as exc:
            # A damaged state file must not keep the emulator from starting: set it aside.
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            await anyio.Path(path).rename(aside)
            log.warning(
                "emulator.state_unreadable", path=str(path), moved_to=str(aside), error=str(exc)
            )
            self.store = Store(ShardVocabulary.drawn(self.config.vocabulary_seed))
            self.reference_ingests.clear()
            self.jobs = JobEngine(self)
            return []
        keep = persist.referenced_blobs(self)
        await anyio.to_thread.run_sync(persist.sweep_orphans, self.state_dir / "blobs", keep)
        return to_resume

    # accessors -----------------------------------------------------------------------------

    @property
    def persistent(self) -> bool:
        """Records outlive the process only on a state_dir the caller chose."""
        return self.config.state_dir is not None

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("the emulator has not started")
        return self._state_dir

    @property
    def blob_dir(self) -> Path | None:
        """Where item bytes go; None in digests mode, where only size and hash are kept."""
        return self.state_dir / "blobs" if self.config.store == "files" else None

    @property
    def output_dir(self) -> Path:
        """Job outputs are small and generated, so they are kept as bytes in every mode."""
        return self.state_dir / "outputs"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the emulator has not started")
        return self._session

    @property
    def webhooks(self) -> WebhookSender:
        if self._webhooks is None:
            raise RuntimeError("the emulator has not started")
        return self._webhooks

    def set_faults(self, profile: FaultProfile | None) -> None:
        self.injector = FaultInjector(profile) if profile is not None else None

    def mint_upload(
        self, *, kind: str, batch_id: str, file_name: str | None, shard_id: str | None
    ) -> UploadIntent:
        token = uuid.uuid4().hex
        intent = UploadIntent(
            token=token,
            kind=kind,
            batch_id=batch_id,
            file_name=file_name,
            shard_id=shard_id,
            extension_headers={LENGTH_RANGE_HEADER: f"0,{self.config.max_upload_bytes}"},
        )
        self.uploads[token] = intent
        return intent

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``GET /_emulator/state``.

        Besides the documented keys, each batch lists its ``parts`` and the top level a
        ``webhooks`` log (one entry per event: type, redacted URL, attempts, delivered).
        Counters: ``puts`` PUTs stored; ``putsRejected`` PUTs refused or cut short (signature,
        headers, expiry, size, injected resets, client gone); ``downloads`` signed GETs served;
        ``faultsInjected``; ``webhooksSent`` deliveries answered with 2xx; ``webhooksFailed``
        events given up after every attempt.
        """
        return {
            "workspace": self.config.workspace,
            "batches": {b.batch_id: b.snapshot() for b in self.store.batch_list},
            "jobs": self.jobs.snapshot(),
            "counters": self.counters.snapshot(),
            "webhooks": [d.snapshot() for d in self._webhooks.deliveries]
            if self._webhooks is not None
            else [],
        }


CORE_KEY = web.AppKey("rfbatch_emulator_core", EmulatorCore)


def core_of(request: web.Request) -> EmulatorCore:
    """The core of the emulator serving ``request``."""
    return request.app[CORE_KEY]
