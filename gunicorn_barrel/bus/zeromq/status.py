"""What a broadcaster tells the outside through its runtime directory: who listens, which links are up.

Its publishing socket is an XPUB: each worker's bus client subscribes to a
topic naming its pid (``wire.worker_topic``), so the subscription messages
say which workers receive what is published from now on (zeromq re-sends a
subscriber's subscriptions when it reconnects to a restarted broadcaster,
and reports a worker that went away). ``StatusFile`` writes that, with the
federation links' state, to ``broadcaster.status.json`` in the runtime
directory when it changes: an operator can look, and a test can wait until
every worker is subscribed and every link is up before it acts, instead of
hoping they won a race. A restarted broadcaster reads the file its
predecessor left, and waits for those workers (``Subscribers.all_back``)
before it reads what workers push or starts its links::

    {"pid": 123, "epoch": "9f...", "workers": [201, 202],
     "links": [{"name": "b", "dialed": true, "up": true, "wants_data": true, "queued": 0}]}
"""
from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn_barrel.bus import wire
from gunicorn_barrel.runtime import endpoints

log = logging.getLogger("gunicorn_barrel.broadcaster")

# Written at most this often (a link's queue length changes with every frame).
STATUS_INTERVAL = 0.1
# A restarted broadcaster waits at most this long for its predecessor's workers.
WORKERS_BACK_WITHIN = 2.0


class Subscribers:
    """The pids of the workers subscribed to this broadcaster, from XPUB subscription messages."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._awaited: set[int] = set()
        self._await_until = 0.0

    def await_previous(self, previous: dict[str, Any] | None, now: float) -> bool:
        """After a restart: wait for the live workers that ``previous`` (the last status file)
        lists. Return whether this is a restart (there was a previous status)."""
        if previous is None:
            return False
        workers = previous.get("workers")
        self._awaited = {p for p in workers if isinstance(p, int) and _alive(p)} \
            if isinstance(workers, list) else set()
        self._await_until = now + WORKERS_BACK_WITHIN
        return True

    def all_back(self, now: float) -> bool:
        """Every awaited worker has subscribed again (or the wait is over).

        Until then a restarted broadcaster reads nothing: what a worker that is
        back resends (or pushed meanwhile), and what peers resend, would be
        published before the others listen again, and lost for them.
        """
        if not self._awaited:
            return True
        missing = self._awaited - self.pids
        if missing and now < self._await_until:
            return False
        if missing:
            log.warning("workers %s did not subscribe again within %.0f s; going on without them",
                        sorted(missing), WORKERS_BACK_WITHIN)
        self._awaited = set()
        return True

    def on_message(self, message: bytes) -> None:
        # b"\x01" + topic: a subscription; b"\x00" + topic: its last subscriber left.
        pid = wire.worker_pid(message[1:])
        if pid is None:
            return  # a channel's subscription, or not a subscription message at all
        if message[:1] == b"\x01":
            self.pids.add(pid)
        elif message[:1] == b"\x00":
            self.pids.discard(pid)


class StatusFile:
    """The status file of one broadcaster: rewritten when its content changes, at most every interval."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self._written: dict[str, Any] | None = None
        self._next_write = 0.0
        self._failed = False

    def update(self, status: dict[str, Any], now: float) -> None:
        if status == self._written or now < self._next_write:
            return
        self._next_write = now + STATUS_INTERVAL
        try:
            endpoints.write_status(self.runtime_dir, status)
        except OSError as exc:
            # Only observers need the file: the bus goes on without it.
            if not self._failed:
                log.warning("cannot write the status file in %s: %s", self.runtime_dir, exc)
            self._failed = True
            return
        self._written = status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
