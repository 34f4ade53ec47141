"""A cluster request waiting for the answers of the peers that were alive when it was made."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gevent.event import Event


class PendingRequest:
    """Collects each expected peer's answer, which may come in several parts.

    A peer's values count only once its last part arrived: a request that
    times out returns the complete answers and the number of peers without one.
    """

    def __init__(self, expected: Iterable[str], until_found: bool = False) -> None:
        self._waiting_for = set(expected)
        self._until_found = until_found  # the first complete answer with values is enough
        self._parts: dict[str, list[Any]] = {}
        self.values: list[Any] = []
        self.answered = 0
        self.errors: list[str] = []  # peers that answered with an error (counted as missing)
        self._failed = 0
        self._done = Event()
        if not self._waiting_for:
            self._done.set()

    def add(self, host: str, values: list[Any], more: bool, error: str | None = None) -> None:
        """Part of ``host``'s answer; ignored from a peer this request does not wait for.

        An answer with an ``error`` (the peer failed to compute or send it) is
        kept in ``errors``, and the peer counts as missing."""
        if host not in self._waiting_for:
            return
        if error is not None:
            self.errors.append(error)
            self._parts.pop(host, None)
            self._failed += 1
            self._stop_waiting_for(host)
            return
        self._parts.setdefault(host, []).extend(values)
        if not more:
            self.values.extend(self._parts.pop(host))
            self.answered += 1
            self._stop_waiting_for(host)
            if self._until_found and self.values:
                self._done.set()

    def forget(self, host: str) -> None:
        """``host`` left (its worker stopped): nothing of it to wait for, nothing missing."""
        if host in self._waiting_for:
            self._parts.pop(host, None)
            self._stop_waiting_for(host)

    def _stop_waiting_for(self, host: str) -> None:
        self._waiting_for.discard(host)
        if not self._waiting_for:
            self._done.set()

    def wait(self, timeout: float) -> int:
        """Wait for every answer, ``timeout`` seconds at most; the number of peers that gave none."""
        self._done.wait(timeout)
        return len(self._waiting_for) + self._failed
