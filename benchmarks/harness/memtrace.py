"""Where rfbatch's memory goes: run its CLI in-process under ``tracemalloc``.

    python benchmarks/harness/memtrace.py OUT.txt -- upload DIR --batch B --state-dir S

A sampler thread watches the traced total; whenever it has grown by ``STEP`` bytes past the
largest snapshot so far it takes a new snapshot (one frame per trace, to keep the cost down).
At exit the largest snapshot is written to ``OUT.txt`` grouped by source line, with the peak
traced size and the process's peak RSS, so a growing structure can be named with numbers.
tracemalloc sees Python allocations only (not SQLite's page cache or OpenSSL's buffers), and
it slows the program down: use it to find *what* grows, not to time anything.
"""

from __future__ import annotations

import resource
import sys
import threading
import tracemalloc
from pathlib import Path

STEP = 4 * 1024 * 1024
TOP = 25


def main() -> None:
    out = Path(sys.argv[1])
    args = sys.argv[sys.argv.index("--") + 1 :]
    tracemalloc.start(1)
    best: list[tracemalloc.Snapshot] = []
    best_size = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            current, _ = tracemalloc.get_traced_memory()
            if current > best_size[0] + STEP:
                best[:] = [tracemalloc.take_snapshot()]
                best_size[0] = current

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    sys.argv = ["rfbatch", *args]
    code: object = 0
    try:
        from rfbatch.cli import main as rfbatch_main

        rfbatch_main()
    except SystemExit as exc:
        code = exc.code
    finally:
        stop.set()
        thread.join()
        _, peak = tracemalloc.get_traced_memory()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        lines = [
            f"exit {code}; traced peak {peak / 1e6:.1f} MB; largest snapshot "
            f"{best_size[0] / 1e6:.1f} MB; peak RSS {rss / 1e6:.1f} MB (this process, "
            "tracemalloc overhead included)"
        ]
        if best:
            stats = best[0].statistics("lineno")
            for stat in stats[:TOP]:
                frame = stat.traceback[0]
                where = f"{frame.filename}:{frame.lineno}"
                lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:9d} blocks  {where}")
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
