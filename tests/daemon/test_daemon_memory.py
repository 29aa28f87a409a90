"""The daemon's memory over months: few malloc arenas (issue 17).

The soak found RSS creeping up in glibc's per-thread arenas, not in Python objects (tracemalloc
saw the traced heap flat): every worker thread that allocates gets an arena of its own, and
fragmented arenas keep their pages. Every command caps them at two before any thread starts.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# Sixteen threads each allocate: without a cap glibc gives most of them an arena of their own.
PROBE = """
import sys, threading
if sys.argv[1] == "cap":
    from rfbatch import allocator
    allocator.tune()
barrier = threading.Barrier(16)
keep = []
def work():
    barrier.wait()
    keep.append([bytearray(20_000) for _ in range(50)])
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
heaps = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    start = int(fields[0].split("-")[0], 16)
    if len(fields) == 5 and start % (64 << 20) == 0:  # anonymous, 64 MiB-aligned: arena heaps
        heaps += 1
print(heaps)
"""


def arena_heaps(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_rfbatch_caps_malloc_arenas_at_two() -> None:
    # The main arena lives in the brk heap; a cap of two leaves one other arena (its heap, and
    # now and then an unrelated mapping that happens to be 64 MiB-aligned). Without the cap the
    # sixteen threads get up to 8 arenas per core: the probe does see them multiply.
    assert arena_heaps("cap") <= 2
    assert arena_heaps("nocap") >= 5
