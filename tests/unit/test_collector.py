"""The collector tuning a command applies once its modules are imported."""

from __future__ import annotations

import subprocess
import sys

from rfbatch import allocator


def test_start_up_objects_are_frozen_and_the_young_generation_is_larger() -> None:
    # In a child: freezing would otherwise keep this test process's objects for good.
    probe = (
        "import gc; from rfbatch import allocator; before = gc.get_freeze_count(); "
        "allocator.tune_collector(); "
        "print(before, gc.get_freeze_count(), *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, gen0, gen1, gen2 = map(int, out)
    assert before == 0
    assert frozen > 1000  # the interpreter's and rfbatch's start-up objects
    assert (gen0, gen1, gen2) == (allocator.GC_GEN0_THRESHOLD, 10, 10)
