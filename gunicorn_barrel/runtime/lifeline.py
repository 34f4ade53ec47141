"""Dying with the arbiter: the kernel's parent-death signal, and the race it leaves.

Used by the side processes and by the workers, so that none of them outlives
an arbiter that was SIGKILLed. A command that is not ours cannot ask for the
signal itself, and Popen's ``preexec_fn`` is unsafe in a process with threads
(the arbiter has some): the supervisor runs such a command through this
module (``command_line``), which asks for the signal, checks that its parent
still lives, then execs the command in its place (same pid; the request
survives exec)::

    python -m gunicorn_barrel.runtime.lifeline PARENT_PID -- COMMAND [ARG ...]
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
MODULE = "gunicorn_barrel.runtime.lifeline"
EXIT_CANNOT_RUN = 127  # a shell's "command not found"


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


def command_line(parent_pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run through this module, so that it gets SIGTERM when ``parent_pid`` dies."""
    return [sys.executable, "-m", MODULE, str(parent_pid), "--", *argv]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        sys.exit(f"usage: python -m {MODULE} PARENT_PID -- COMMAND [ARG ...]")
    parent, command = int(args[0]), args[2:]
    if not signal_when_parent_dies(parent):
        sys.exit(f"{command[0]}: not started, the arbiter ({parent}) is gone")
    # Python ignores these two at start; the command gets the defaults back, as
    # subprocess gives them to its children.
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot run {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_CANNOT_RUN)


if __name__ == "__main__":
    main()
