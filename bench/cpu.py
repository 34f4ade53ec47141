"""CPU accounting from /proc: per process, for the whole machine, and waiting for a quiet machine.

The machine is shared: other processes (test suites, fuzzers) may compete
with a run. A run records how much CPU went elsewhere, and each run first
waits (bounded) for the machine to be quiet.
"""
from __future__ import annotations

import os
import time

TICK = os.sysconf("SC_CLK_TCK")
QUIET_PCT = 25.0  # machine busy time, in % of one core, below which it counts as quiet
_QUIET_SAMPLE_S = 0.5


def process_seconds(pids: list[int]) -> float:
    """utime + stime of live ``pids`` (exited ones count as 0)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICK


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def wait_for_quiet(max_wait: float) -> float:
    """Wait until the machine's busy time is below QUIET_PCT, ``max_wait`` s at most; the wait."""
    start = time.monotonic()
    while True:
        busy0, _ = machine_seconds()
        time.sleep(_QUIET_SAMPLE_S)
        busy1, _ = machine_seconds()
        waited = time.monotonic() - start
        if 100 * (busy1 - busy0) / _QUIET_SAMPLE_S < QUIET_PCT or waited >= max_wait:
            return waited
