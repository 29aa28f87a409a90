"""Run a command and measure its whole process tree: wall time, CPU time, peak memory.

* Wall: from just before the spawn to the moment the root process is reaped, so interpreter
  start-up and imports count, as they do for a user.
* CPU: user + system from ``wait4``; the kernel folds in every descendant its parent reaped
  (the reference client's ``multiprocessing`` pool workers are reaped by their pool).
* Memory: a sampler thread walks the tree through ``/proc`` every few milliseconds and keeps the
  peak of the summed RSS, and of the summed PSS (RSS double-counts pages that forked workers
  share with their parent; PSS splits them, so it is the fairer number for a pool of forks).
  ``ru_maxrss`` from ``wait4`` is not used: Linux folds the high-water mark of the memory the
  child had *before* ``exec`` (a copy of the harness) into it, so it reports the harness's size.
* Noise: the machine's busy CPU time over the run, less the tree's and the emulator's, is
  reported as ``other_cpu_s``, so a run disturbed by something else on the box can be seen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss: int
    peak_pss: int
    max_procs: int
    voluntary_switches: int
    involuntary_switches: int
    returncode: int
    timed_out: bool
    emulator_cpu_s: float
    other_cpu_s: float


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields resume after the last ")".
    return raw[raw.rfind(")") + 2 :].split()


def parents() -> dict[int, int]:
    """pid → ppid for every process visible now."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                out[int(entry)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], ()))
        i += 1
    return out


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def process_cpu_s(pid: int) -> float:
    """User + system seconds of a live process (all its threads), 0.0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (every core)."""
    with open("/proc/stat") as fh:
        cpu = fh.readline().split()
    ticks = [int(x) for x in cpu[1:]]
    idle = ticks[3] + ticks[4]
    # guest time is already inside user/nice
    return (sum(ticks[:8]) - idle) / TICKS


class TreeSampler:
    """Samples the summed RSS and PSS of a process tree until stopped; keeps the peaks.

    The sampler shares two cores with the tool and the emulator, so it is frugal: RSS (one
    ``statm`` read per process) every tick, PSS (a VMA walk) every 5th, and the tree itself
    (a scan of ``/proc``) every 10th tick.
    """

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.root = root
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.max_procs = 0
        self._pids = [root]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self, tick: int) -> None:
        if tick % 10 == 0:
            self._pids = tree(self.root)
            self.max_procs = max(self.max_procs, len(self._pids))
        self.peak_rss = max(self.peak_rss, sum(rss_bytes(p) for p in self._pids))
        if tick % 5 == 0:
            self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in self._pids))

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample(tick)
            tick += 1
            self._stop.wait(self.interval)


def kill_group(pgid: int) -> None:
    """SIGKILL the session a measured command was started in (it leads its own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def measure(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: Path,
    stderr: Path,
    timeout: float,
    cwd: Path | None = None,
    emulator_pid: int | None = None,
) -> Measurement:
    """Run ``cmd`` to completion (killed after ``timeout`` seconds) and measure it."""
    emu_before = process_cpu_s(emulator_pid) if emulator_pid else 0.0
    busy_before = system_busy_s()
    harness_before = time.process_time()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            kill_group(proc.pid)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        finally:
            timer.cancel()
            sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Anything the tool left behind in its session goes too.
        kill_group(proc.pid)
    emu_cpu = (process_cpu_s(emulator_pid) - emu_before) if emulator_pid else 0.0
    cpu = usage.ru_utime + usage.ru_stime
    busy = system_busy_s() - busy_before
    harness = time.process_time() - harness_before
    return Measurement(
        wall_s=wall,
        cpu_s=cpu,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss=sampler.peak_rss,
        peak_pss=sampler.peak_pss,
        max_procs=sampler.max_procs,
        voluntary_switches=usage.ru_nvcsw,
        involuntary_switches=usage.ru_nivcsw,
        returncode=proc.returncode,
        timed_out=fired.is_set(),
        emulator_cpu_s=emu_cpu,
        other_cpu_s=max(0.0, busy - cpu - emu_cpu - harness),
    )
