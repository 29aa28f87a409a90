"""The upload stage: shard workers PUT streamed tars, video workers PUT streamed files.

Each worker asks for its signed URL just before the PUT (URLs expire) and hands the transfer a
``refresh`` callback, so an expired or refused URL is replaced and the body sent again. The
manifest is told ``uploading`` before the first byte and ``uploaded`` only after the storage
answered 2xx: a crash in between leaves the files to be sent again, never counted as sent.

A local file that changes or vanishes while it is being read fails that PUT (the storage never
receives a complete body, so nothing half-written is ingested); the file is put back to ``seen``
for the next pass, and the rest of its shard is sent again without it.

Duplicates: the bound
---------------------
A file reaches the service more than once only when rfbatch cannot know that a PUT of it
succeeded: the answer was lost (a read timeout, or a connection cut after the whole body went
out), or the process died between the storage's 2xx and the manifest's ``uploaded``. Each such
event sends again exactly the one shard (at most ``upload.shard_max_files`` images) or the one
video that PUT carried; nothing else is ever sent twice. So the extra copies are at most:

* per lost answer: the files of that one shard or video;
* per crash: the files the manifest holds ``packed`` or ``uploading`` at that moment, which is
  at most ``shard_workers`` shards plus ``video_workers`` videos (what is in flight).

A resent file goes to the same batch under the same member name (the manifest keeps both, and
the daemon resumes interrupted files into their own batch), so a service that keys a batch's
items by name, as the emulator does, replaces its copy rather than adding one: counts, jobs and
results see each file once. ``tests/reliability`` checks this bound under faults and crashes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import SignedUrl
from rfbatch.errors import (
    ApiError,
    EntityTooLargeError,
    FatalError,
    FileChangedError,
    LocalFileError,
    TransferError,
)
from rfbatch.localfs.archive import TarBody, TarMember
from rfbatch.localfs.file_body import FileBody
from rfbatch.localfs.reading import ReadBuffers
from rfbatch.media import FoundFile
from rfbatch.obs.tally import Tally
from rfbatch.pipeline.batches import Assigned, InFlight
from rfbatch.pipeline.pack import Shard
from rfbatch.state.ledger import Ledger
from rfbatch.transfer import Transfer
from rfbatch.transfer.ratelimit import ByteBudget
from rfbatch.transfer.signed import stated_limit

log = structlog.get_logger("rfbatch.upload")

NOTIFICATION_MEMBER = "notification_config.json"
# A shard whose files keep changing under it is given up after this many re-packs.
MAX_REPACKS = 5
# Read buffers the upload workers keep between them: two or three per PUT busy reading at once
# on a LAN. Bodies share them, so PUTs that a slow link keeps waiting do not each keep their
# own (beyond these, a buffer is made for the chunk and freed once sent).
SHARED_READ_BUFFERS = 16


@dataclass(frozen=True)
class UploadOptions:
    """What the service is told about uploads, and how files are read."""

    display_name: str | None = None
    ingest_webhook_url: str | None = None
    chunk_bytes: int = 512 * 1024
    max_in_flight_bytes: int = 2 * 1024 * 1024 * 1024


class Uploader:
    """Shared by all upload workers of a pass."""

    def __init__(
        self,
        client: RoboflowClient,
        transfer: Transfer,
        manifest: Ledger,
        options: UploadOptions,
        tally: Tally,
        in_flight: InFlight,
    ) -> None:
        self.client = client
        self.transfer = transfer
        self.manifest = manifest
        self.options = options
        self.tally = tally
        self.in_flight = in_flight
        self.budget = ByteBudget(options.max_in_flight_bytes)
        self.buffers = ReadBuffers(options.chunk_bytes, keep=SHARED_READ_BUFFERS)

    def _count_bytes(self, n: int) -> None:
        self.tally.wire_bytes += n

    # --- shards -------------------------------------------------------------------------

    async def shard_worker(self, receive: MemoryObjectReceiveStream[Shard]) -> None:
        async with receive:
            async for shard in receive:
                await self.send_shard(shard.batch_id, shard.files)

    async def send_shard(self, batch: str, files: Sequence[FoundFile]) -> None:
        """Send ``files`` as one shard; halves of it, and so on, while storage finds it too
        large (down to one file, which then fails with the reason)."""
        parts = [list(files)]
        while parts:
            parts[0:1] = await self._send_part(batch, parts[0])

    async def _send_part(self, batch: str, files: list[FoundFile]) -> list[list[FoundFile]]:
        """Send one shard; returns the halves to send instead when it is too large."""
        pending = files
        for _ in range(MAX_REPACKS):
            if not pending:
                return []
            size = sum(f.size for f in pending)
            await self.budget.acquire(size)
            try:
                async with self.transfer.put_slot():
                    await self._put_shard(batch, pending)
                return []
            except EntityTooLargeError as exc:
                if len(pending) == 1:
                    await self._give_up(pending, batch, f"too large for storage: {exc}")
                    return []
                half = len(pending) // 2
                log.info("upload.split", batch=batch, files=len(pending), reason=str(exc))
                return [pending[:half], pending[half:]]
            except LocalFileError as exc:
                # Drop the one file at fault and send the rest again.
                pending = await self._set_aside(batch, pending, exc)
            except FatalError:
                raise
            except (ApiError, TransferError) as exc:
                await self._give_up(pending, batch, f"upload failed: {exc}")
                return []
            finally:
                await self.budget.release(size)
        await self._give_up(pending, batch, "files kept changing while being sent")
        return []

    async def _put_shard(self, batch: str, files: Sequence[FoundFile]) -> None:
        names = await self.manifest.assign_members(batch, files)
        members = [TarMember.from_found(names[f.path], f) for f in files]
        if self.options.ingest_webhook_url:
            config = {"ingestId": batch, "notificationsURL": self.options.ingest_webhook_url}
            members.append(
                TarMember.from_bytes(
                    NOTIFICATION_MEMBER, json.dumps(config).encode(), int(time.time())
                )
            )
        body = TarBody(members, chunk_size=self.options.chunk_bytes, buffers=self.buffers)
        data_bytes = sum(f.size for f in files)
        paths = [f.path for f in files]
        shard_id = (await self.manifest.create_shard(batch, paths, size=data_bytes)).shard_id
        await self.manifest.mark(paths, "uploading", batch_id=batch, shard_id=shard_id)
        await self.manifest.update_shard(shard_id, state="uploading", bump_attempts=True)

        async def fresh_url() -> SignedUrl:
            return await self.client.shard_upload_url(batch, self.options.display_name)

        started = time.monotonic()
        try:
            signed = await fresh_url()
            limit = stated_limit(signed)
            if limit is not None and body.length > limit:
                # Said before anything is sent: the shard goes in pieces that fit.
                raise EntityTooLargeError(
                    f"a shard of {body.length} bytes is over storage's limit of {limit}"
                )
            await self.transfer.put(signed, body, refresh=fresh_url, on_bytes=self._count_bytes)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.manifest.update_shard(shard_id, state="failed", error=str(exc)[:500])
            raise
        # only_shard: a file re-queued by a newer version meanwhile keeps its new state.
        await self.manifest.mark(paths, "uploaded", batch_id=batch, only_shard=shard_id)
        await self.manifest.update_shard(shard_id, state="uploaded")
        self.in_flight.release(paths, batch)
        self.tally.sent += len(files)
        self.tally.sent_bytes += data_bytes
        self.tally.shards += 1
        log.info(
            "upload.shard",
            batch=batch,
            shard=shard_id,
            files=len(files),
            bytes=body.length,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _set_aside(
        self, batch: str, files: list[FoundFile], exc: LocalFileError
    ) -> list[FoundFile]:
        culprit = Path(exc.path)
        if isinstance(exc, FileChangedError):
            # Not an error of the file: it is still being written. The next pass takes it.
            await self.manifest.mark([culprit], "seen", error=exc.reason)
            self.tally.requeued += 1
            log.info("upload.requeued", path=str(culprit), reason=exc.reason)
        else:
            await self.manifest.mark([culprit], "skipped", error=exc.reason)
            self.tally.skip(str(culprit), exc.reason)
            log.warning("upload.skipped", path=str(culprit), reason=exc.reason)
        rest = [f for f in files if f.path != culprit]
        if len(rest) == len(files):
            # The error named no file of this shard: nothing to drop, so stop trying.
            await self._give_up(rest, batch, str(exc))
            return []
        self.in_flight.release([culprit], batch)
        return rest

    async def _give_up(self, files: Sequence[FoundFile], batch: str, reason: str) -> None:
        if not files:
            return
        await self.manifest.mark([f.path for f in files], "failed", batch_id=batch, error=reason)
        self.in_flight.release([f.path for f in files], batch)
        for f in files:
            self.tally.fail(str(f.path), reason)
        log.error("upload.failed", batch=batch, files=len(files), reason=reason)

    # --- videos -------------------------------------------------------------------------

    async def video_worker(self, receive: MemoryObjectReceiveStream[Assigned]) -> None:
        async with receive:
            async for item in receive:
                await self.send_video(item.batch_id, item.file)

    async def send_video(self, batch: str, file: FoundFile) -> None:
        await self.budget.acquire(file.size)
        try:
            async with self.transfer.put_slot():
                await self._send_video(batch, file)
        finally:
            await self.budget.release(file.size)

    async def _send_video(self, batch: str, file: FoundFile) -> None:
        try:
            name = (await self.manifest.assign_members(batch, [file]))[file.path]
            await self.manifest.mark([file.path], "uploading", batch_id=batch)

            async def fresh_url() -> SignedUrl:
                return await self.client.video_upload_url(batch, name, self.options.display_name)

            body = FileBody(
                file.path,
                self.options.chunk_bytes,
                size=file.size,
                mtime_ns=file.mtime_ns,
                inode=file.inode,
                buffers=self.buffers,
            )
            started = time.monotonic()
            await self.transfer.put(
                await fresh_url(), body, refresh=fresh_url, on_bytes=self._count_bytes
            )
        except LocalFileError as exc:
            await self._set_aside(batch, [file], exc)
            return
        except FatalError:
            raise
        except (ApiError, TransferError) as exc:
            await self._give_up([file], batch, f"upload failed: {exc}")
            return
        await self.manifest.mark([file.path], "uploaded", batch_id=batch)
        self.in_flight.release([file.path], batch)
        self.tally.sent += 1
        self.tally.sent_bytes += file.size
        self.tally.videos += 1
        log.info(
            "upload.video",
            batch=batch,
            name=name,
            bytes=file.size,
            seconds=round(time.monotonic() - started, 3),
        )
