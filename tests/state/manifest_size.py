"""Manifest bytes per file, for a camera-like source: ``python -m tests.state.manifest_size``.

Each simulated day 10,000 images arrive (10 batches of 1,000, shards of 100), are ingested and
their batches exported; the camera deletes footage a day old. Once a day the retention pass runs
(when this rfbatch has one) with ``retention_days`` 3. Printed per day: rows, bytes on disk, bytes
per row and bytes per file still in the source. Without retention the bytes per file in the
source grow day after day; with it they stay flat.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import anyio

from rfbatch.state.manifest import SqliteManifest
from tests.state.support import ROOT, ff

DAY = 86400.0


def db_bytes(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in state_dir.glob("manifest.sqlite3*"))


async def run(days: int, per_day: int, retention_days: float) -> None:
    now = 1_750_000_000.0

    def clock() -> float:
        return now

    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        in_source: set[str] = set()
        by_day: list[list[str]] = []
        async with await SqliteManifest.open(state_dir, clock=clock) as m:
            print(
                f"{'day':>4} {'rows':>8} {'bytes':>11} {'B/row':>6} {'in source':>9} {'B/file':>7}"
            )
            for day in range(days):
                rels = [f"cam{i % 4}/d{day:03d}/img-{i:06d}.jpg" for i in range(per_day)]
                for b in range(0, per_day, 1000):
                    files = [ff(r, size=50_000 + i) for i, r in enumerate(rels[b : b + 1000])]
                    batch = f"rfbatch-d{day:03d}-img-{b // 1000:03d}"
                    await m.filter_new(files)
                    await m.create_batch(batch, "images")
                    await m.assign_members(batch, files)
                    for s in range(0, len(files), 100):
                        paths = [f.path for f in files[s : s + 100]]
                        shard = await m.create_shard(batch, paths, size=5_000_000)
                        await m.mark(paths, "ingested", batch_id=batch)
                        await m.update_shard(shard.shard_id, state="ingested")
                    await m.add_downloads(batch, [(None, "results.jsonl", 1000)])
                    await m.update_batch(batch, state="exported")
                new = {str(ROOT / r) for r in rels}
                in_source |= new
                by_day.append(sorted(new))
                if day >= 1:  # the camera keeps a day of footage
                    in_source -= set(by_day[day - 1])
                now += DAY
                if hasattr(m, "forget"):
                    await m.forget(now - retention_days * DAY, exists=in_source.__contains__)
                conn_rows = await m.counts()
                rows = sum(conn_rows.values())
                size = db_bytes(state_dir)
                print(
                    f"{day + 1:>4} {rows:>8} {size:>11} {size // max(rows, 1):>6} "
                    f"{len(in_source):>9} {size // len(in_source):>7}",
                    flush=True,
                )
        os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--per-day", type=int, default=10_000)
    parser.add_argument("--retention-days", type=float, default=3.0)
    args = parser.parse_args()
    anyio.run(run, args.days, args.per_day, args.retention_days)


if __name__ == "__main__":
    main()
