"""Dying with the arbiter: the kernel's parent-death signal, and the race it leaves.

Used by the side processes and by the workers, so that none of them outlives
an arbiter that was SIGKILLed.
"""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for ``sig`` when the parent dies; False if it is gone already.

    The parent may die before the request is made: the caller checks the
    result and leaves at once rather than wait for a signal that never comes.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: callers' own ppid checks remain
        pass
    return os.getppid() == parent_pid
