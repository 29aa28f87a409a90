"""The loopback ceiling: the least a client can do to move a scenario's bytes through the emulator.

Run in its own process (``python ceiling.py MODE ...``), with only aiohttp and uvloop, not rfbatch:

* ``shards DIR``: packs DIR's images into tars in memory *before* the clock starts (the same
  grouping rfbatch uses: at most ``--files-per-shard`` files and ``--shard-bytes`` bytes), then,
  timed, asks for a signed URL and PUTs each tar with ``--concurrency`` in flight, and polls the
  count until the emulator has ingested every file.
* ``videos DIR``: reads every video into memory first, then, timed, asks for a URL and PUTs each.
* ``export BATCH``: timed, lists every page (``--page-size``) while ``--concurrency`` GETs fetch
  the files and throw the bytes away (no disk).

It prints one JSON line: ``{"seconds", "files", "bytes"}`` for the timed part. The bytes are
file bytes (tar headers not counted), the same measure the harness uses for every tool.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import ssl
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

STAGING = "/data-staging/v1/external"
CHUNK = 1024 * 1024
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".jpe", ".jp2", ".dib"}


def build_tars(folder: Path, files_per_shard: int, shard_bytes: int) -> list[tuple[bytes, int]]:
    """In-memory tar bodies and the number of files in each."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    groups: list[list[Path]] = [[]]
    size = 0
    for path in paths:
        n = path.stat().st_size
        if groups[-1] and (len(groups[-1]) >= files_per_shard or size + n > shard_bytes):
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += n
    bodies = []
    for group in groups:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in group:
                tar.add(path, arcname=path.name)
        bodies.append((buf.getvalue(), len(group)))
    return bodies


async def slices(body: bytes) -> AsyncIterator[memoryview]:
    """The body in 1 MiB views: aiohttp sends a large ``bytes`` body at about half the speed
    (and holds a copy of it per request in flight)."""
    view = memoryview(body)
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK]


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session = session
        self.base = base
        self.key = key
        self.workspace = ""

    async def get_json(self, url: str, **params: str) -> Any:
        async with self.session.get(url, params={"api_key": self.key, **params}) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def open(self) -> None:
        self.workspace = (await self.get_json(f"{self.base}/"))["workspace"]

    def batch_url(self, batch: str) -> str:
        return f"{self.base}{STAGING}/{self.workspace}/batches/{batch}"

    async def signed_put(self, url: str, params: dict[str, str], body: bytes) -> None:
        async with self.session.post(url, params={"api_key": self.key, **params}) as resp:
            resp.raise_for_status()
            details = (await resp.json())["signedURLDetails"]
        headers = {**details["extensionHeaders"], "Content-Length": str(len(body))}
        async with self.session.put(
            details["uploadURL"], data=slices(body), headers=headers
        ) as resp:
            resp.raise_for_status()

    async def wait_count(self, batch: str, expected: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            count = int((await self.get_json(f"{self.batch_url(batch)}/count"))["count"])
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.01)


async def put_all(
    api: Api, jobs: list[tuple[str, dict[str, str], bytes]], concurrency: int
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str, params: dict[str, str], body: bytes) -> None:
        async with gate:
            await api.signed_put(url, params, body)

    await asyncio.gather(*(one(*job) for job in jobs))


async def run_shards(api: Api, args: argparse.Namespace) -> dict[str, float]:
    tars = build_tars(Path(args.source), args.files_per_shard, args.shard_bytes)
    files = sum(n for _, n in tars)
    data = sum(p.stat().st_size for p in Path(args.source).iterdir())
    url = f"{api.batch_url(args.batch)}/bulk-upload/image-files"
    jobs: list[tuple[str, dict[str, str], bytes]] = [(url, {}, body) for body, _ in tars]
    started = time.perf_counter()
    await put_all(api, jobs, args.concurrency)
    count = await api.wait_count(args.batch, files, args.timeout)
    seconds = time.perf_counter() - started
    if count < files:
        raise SystemExit(f"only {count} of {files} files ingested")
    return {"seconds": seconds, "files": files, "bytes": data, "bodies": len(tars)}


async def run_videos(api: Api, args: argparse.Namespace) -> dict[str, float]:
    paths = sorted(Path(args.source).iterdir())
    bodies = [(p.name, p.read_bytes()) for p in paths]
    url = f"{api.batch_url(args.batch)}/upload/video"
    jobs = [(url, {"fileName": name}, body) for name, body in bodies]
    started = time.perf_counter()
    await put_all(api, jobs, args.concurrency)
    count = await api.wait_count(args.batch, len(jobs), args.timeout)
    seconds = time.perf_counter() - started
    if count < len(jobs):
        raise SystemExit(f"only {count} of {len(jobs)} videos stored")
    return {"seconds": seconds, "files": len(jobs), "bytes": sum(len(b) for _, b in bodies)}


async def run_export(api: Api, args: argparse.Namespace) -> dict[str, float]:
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4 * args.page_size)
    totals = {"files": 0, "bytes": 0}

    async def lister() -> None:
        token: str | None = None
        while True:
            params = {"pageSize": str(args.page_size)}
            if token:
                params["nextPageToken"] = token
            page = await api.get_json(f"{api.batch_url(args.batch)}/list", **params)
            for meta in page["filesMetadata"]:
                await queue.put(meta["downloadURL"])
            token = page.get("nextPageToken")
            if not token:
                break
        for _ in range(args.concurrency):
            await queue.put(None)

    async def fetcher() -> None:
        while (url := await queue.get()) is not None:
            async with api.session.get(url) as resp:
                resp.raise_for_status()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    totals["bytes"] += len(chunk)
            totals["files"] += 1

    started = time.perf_counter()
    await asyncio.gather(lister(), *(fetcher() for _ in range(args.concurrency)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "files": totals["files"], "bytes": totals["bytes"]}


async def main(args: argparse.Namespace) -> None:
    timeout = aiohttp.ClientTimeout(total=args.timeout, sock_connect=10, sock_read=60)
    # Over HTTPS it trusts what the official client would: REQUESTS_CA_BUNDLE (the emulator's CA).
    bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    trust = ssl.create_default_context(cafile=bundle) if bundle else True
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4, ssl=trust)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        api = Api(session, os.environ["API_BASE_URL"], os.environ["ROBOFLOW_API_KEY"])
        await api.open()
        runner = {"shards": run_shards, "videos": run_videos, "export": run_export}[args.mode]
        result = await runner(api, args)
    print(json.dumps(result), flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["shards", "videos", "export"])
    parser.add_argument("--source", help="folder to upload (shards, videos)")
    parser.add_argument("--batch", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--files-per-shard", type=int, default=500)
    parser.add_argument("--shard-bytes", type=int, default=1024 * 1024 * 1024)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(parse(sys.argv[1:])))
