"""Resident memory of a server's processes, from /proc (KB)."""
from __future__ import annotations

import time
from collections.abc import Callable

SETTLE_TIMEOUT = 10.0
SETTLE_INTERVAL = 0.5
SETTLED_WITHIN = 0.01  # two readings this close (relative) count as settled


def rss(pids: dict[str, int]) -> dict[str, int]:
    """VmRSS in KB of each named process (processes gone are left out)."""
    found = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        found[name] = int(line.split()[1])
        except OSError:
            continue
    return found


def settled_rss(pids: Callable[[], dict[str, int]]) -> dict[str, int]:
    """RSS once it stops moving after a change (connections being set up), ``SETTLE_TIMEOUT`` s at most."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = rss(pids())
    while time.monotonic() < deadline:
        time.sleep(SETTLE_INTERVAL)
        now = rss(pids())
        if abs(sum(now.values()) - sum(last.values())) <= SETTLED_WITHIN * sum(last.values()):
            return now
        last = now
    return last
