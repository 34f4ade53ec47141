"""Waiting for SIGTERM (or SIGINT) without a signal handler.

The usual ``signal.signal(SIGTERM, lambda *_: stop.set())`` can hang the
process for good: Python runs the handler in the main thread between two
bytecodes, possibly while that thread holds the Event's own (non-reentrant)
lock inside ``stop.wait()``; ``set()`` then waits for that lock forever, and
a process told to stop (or whose arbiter died) never does. Here the signals
are blocked instead and taken with ``sigtimedwait``, which is also the sleep
between two rounds of work. No handler, no race.
"""
from __future__ import annotations

import signal
from collections.abc import Iterable

DEFAULT = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Block ``signals`` in the calling thread and in every thread it starts afterwards.

    Make it first thing in the main thread, before any thread starts (a thread
    started earlier may still take the signal's default action: dying).
    """

    def __init__(self, signals: Iterable[int] = DEFAULT) -> None:
        self.signals = frozenset(signals)
        self.received: int | None = None
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True (at once, and from then on) once a stop signal came."""
        if self.received is None:
            got = signal.sigtimedwait(self.signals, max(timeout, 0.0))
            if got is not None:
                self.received = got.si_signo
        return self.received is not None

    def __bool__(self) -> bool:
        return self.wait(0)
