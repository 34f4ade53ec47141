"""Recording visits: the count, the rate-limited live events, the last visits.

Store keys (``gunicorn_barrel.store``, shared by every worker):
    short:<code>          {"url", "created"}: the link (written once, compare_and_set)
    visits:<code>         every visit (incr)
    live:<code>           visits sent live to the map (incr; also numbers them)
    rate:<code>:<second>  visits of that second that asked to go live (incr, expires)
    recent:<code>:<slot>  the last RECENT live visits, a ring indexed by their number

A visit always counts; it goes live (a "visit" event to the socket.io room
``code:<code>``, from whatever worker served it, through BarrelManager) only
while fewer than LIVE_EVENTS_PER_SECOND of that code's visits did so in the
same second, counted across all workers. The worker that sees the first
visit over the limit in a second sends a "count" event once that second is
over, so watchers' counts catch up with the visits that were not drawn. A
worker that knows a second is full stops asking the store about it: during a
flood a visit costs one incr.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, TypedDict

import gevent

from demos.shortener.clientip import TrustedProxies, client_ip
from demos.shortener.geo import Locator
from gunicorn_barrel.store import Store, StoreError, get_store

log = logging.getLogger("demos.shortener.visits")

LIVE_EVENTS_PER_SECOND = 20
RECENT = 50
_RATE_KEY_TTL = 10.0
_COUNT_DELAY = 0.25  # after the end of a second with dropped visits, before sending the count


def room(code: str) -> str:
    return f"code:{code}"


def short_key(code: str) -> str:
    return f"short:{code}"


class Visit(TypedDict):
    code: str
    seq: int  # the number of this live visit (1, 2, ...), unique per code
    time: float  # seconds since the epoch, when the server got it
    lat: float | None
    lon: float | None
    country: str | None
    city: str | None
    visits: int  # the code's visit count when it was recorded
    pid: int  # the worker that served it


class LiveLimiter:
    """At most ``rate`` live events per second per code, across all workers."""

    def __init__(self, rate: int = LIVE_EVENTS_PER_SECOND) -> None:
        self.rate = rate
        self._window = 0
        self._known: dict[str, bool] = {}  # code -> this second's counter is full, in this worker

    def allow(self, store: Store, code: str, now: float) -> tuple[bool, bool]:
        """(may this visit go live, is it the first one of this second over the limit)."""
        window = int(now)
        if window != self._window:
            self._window, self._known = window, {}
        full = self._known.get(code)
        if full:
            return False, False
        key = f"rate:{code}:{window}"
        if full is None:
            self._known[code] = False
            if store.compare_and_set(key, None, 1, ttl=_RATE_KEY_TTL):
                return True, False
        count = store.incr(key)
        if count > self.rate:
            if window == self._window:
                self._known[code] = True
            return False, count == self.rate + 1
        return True, False


class VisitRecorder:
    """Counts each visit, locates it, and sends it live to the code's watchers."""

    def __init__(self, sio: Any, trusted: TrustedProxies, locator: Locator,
                 rate: int = LIVE_EVENTS_PER_SECOND) -> None:
        self.sio = sio
        self.trusted = trusted
        self.locator = locator
        self.limiter = LiveLimiter(rate)

    def record(self, code: str, environ: dict[str, Any]) -> None:
        store = get_store()
        now = time.time()
        visits = store.incr(f"visits:{code}")
        live, first_dropped = self.limiter.allow(store, code, now)
        if first_dropped:
            gevent.spawn_later(int(now) + 1 - now + _COUNT_DELAY, self._send_count, code)
        if not live:
            return
        location = self.locator.locate(client_ip(environ, self.trusted))
        seq = store.incr(f"live:{code}")
        visit: Visit = {
            "code": code, "seq": seq, "time": math.floor(now * 1000) / 1000,  # int(time): its second
            "lat": location["lat"] if location else None,
            "lon": location["lon"] if location else None,
            "country": location["country"] if location else None,
            "city": location["city"] if location else None,
            "visits": visits, "pid": os.getpid(),
        }
        store.set(f"recent:{code}:{seq % RECENT}", dict(visit))
        self.sio.emit("visit", dict(visit), room=room(code))

    def _send_count(self, code: str) -> None:
        try:
            self.sio.emit("count", counts(get_store(), code), room=room(code))
        except StoreError as exc:
            log.warning("count of %s not sent: %s", code, exc)


def counts(store: Store, code: str) -> dict[str, Any]:
    visits = int(store.get(f"visits:{code}", 0))
    live = int(store.get(f"live:{code}", 0))
    return {"code": code, "visits": visits, "live_events": live, "dropped": max(visits - live, 0)}


def link_state(store: Store, code: str) -> dict[str, Any] | None:
    """The link, its counts and its last live visits (oldest first); None for an unknown code."""
    link = store.get(short_key(code))
    if not isinstance(link, dict):
        return None
    recent = [v for v in store.scan(f"recent:{code}:", limit=RECENT).values() if isinstance(v, dict)]
    recent.sort(key=lambda v: v.get("seq", 0))
    return {**counts(store, code), "url": link.get("url"), "created": link.get("created"),
            "recent": recent, "live_limit": LIVE_EVENTS_PER_SECOND}
