"""Helpers for a pub/sub link to Redis, shared by the Redis bus and the Redis store."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from gevent.event import Event
from redis.exceptions import TimeoutError as RedisTimeoutError


def live_messages(
    pubsub: Any, confirmed: Event, closed: Callable[[], bool], timeout: float, idle_ping: float, poll: float
) -> Iterator[dict[str, Any]]:
    """The messages of ``pubsub`` while not ``closed()``, with a watch on the link.

    A link that died without a reset (a frozen server, a partition) sends
    nothing: after ``idle_ping`` silent seconds it is PINGed, and an unanswered
    PING, or a subscription not ``confirmed`` (an Event the caller sets),
    raises RedisTimeoutError after ``timeout`` seconds. ``poll`` is the wait
    of one ``get_message``.
    """
    started = heard = time.monotonic()
    ping_sent: float | None = None
    while not closed():
        message = pubsub.get_message(timeout=poll)
        now = time.monotonic()
        if message is None:
            if not confirmed.is_set() and now - started > timeout:
                raise RedisTimeoutError(f"no subscription confirmation within {timeout} s")
            if ping_sent is not None and now - ping_sent > timeout:
                raise RedisTimeoutError(f"no answer to PING within {timeout} s")
            if ping_sent is None and now - heard > idle_ping:
                pubsub.ping()
                ping_sent = now
            continue
        heard, ping_sent = now, None
        yield message
