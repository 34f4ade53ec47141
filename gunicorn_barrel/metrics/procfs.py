"""What Linux tells about a process in /proc: whether it is the one that wrote a snapshot, its CPU and memory.

A snapshot file names its writer by pid and by the process's start time in
clock ticks since boot (field 22 of ``/proc/<pid>/stat``): a pid that was
reused by another process since does not pass for the writer.
"""
from __future__ import annotations

import dataclasses
import os

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` barrel reads."""

    state: str
    ppid: int
    cpu_seconds: float  # user + system
    start_ticks: int  # clock ticks after boot
    rss_bytes: int

    @property
    def running(self) -> bool:
        return self.state not in ("Z", "X")

    @property
    def start_time(self) -> float:
        """Start time since the Unix epoch."""
        return boot_time() + self.start_ticks / _TICKS


def stat(pid: int) -> ProcStat | None:
    """The state of process ``pid``, or None if there is none (or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = fh.read().rsplit(b")", 1)[1].split()
        return ProcStat(fields[0].decode(), int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS,
                        int(fields[19]), int(fields[21]) * _PAGE)
    except (OSError, ValueError, IndexError):
        return None


_boot_time: float | None = None


def boot_time() -> float:
    """When the machine booted, since the Unix epoch (``btime`` of /proc/stat)."""
    global _boot_time
    if _boot_time is None:
        try:
            with open("/proc/stat") as fh:
                _boot_time = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
        except (OSError, StopIteration, ValueError, IndexError):
            _boot_time = 0.0
    return _boot_time


def alive(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start_ticks`` and has not exited."""
    found = stat(pid)
    return found is not None and found.running and found.start_ticks == start_ticks
