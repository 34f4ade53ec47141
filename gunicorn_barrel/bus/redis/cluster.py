"""Sharded pub/sub on a Redis Cluster: SSUBSCRIBE to shard channels on the masters serving them.

A shard channel is served by the master of its slot, and SSUBSCRIBE has no
patterns and must reach that master. ``sharded_messages`` learns the
cluster's layout, opens one subscribing connection per master concerned
(one greenlet each, each watched as ``pubsub.live_messages`` watches a
link), and yields what any of them receives. Any failure (a master dead,
a slot moved: MOVED, or the server's SUNSUBSCRIBE of a migrated slot) ends
the whole subscription with an exception; the caller subscribes again
after a backoff, with the layout learned again, and recovers what it
missed its own way (the bus replays, the store counts).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gevent
import gevent.queue
from gevent.event import Event
from redis.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError

from gunicorn_barrel.bus.redis import connection
from gunicorn_barrel.bus.redis.pubsub import live_messages

# What sharded_messages yields once every master confirmed every channel of its own.
SUBSCRIBED = {"type": "subscribed"}
_CONFIRMED = object()  # a reader's word that its master confirmed all its channels


def sharded_messages(url: str, names: Sequence[bytes], closed: Callable[[], bool], timeout: float,
                     idle_ping: float, poll: float, **options: Any) -> Iterator[dict[str, Any]]:
    """The ``smessage``s of the shard channels ``names``, then SUBSCRIBED once all are confirmed.

    Raises the first error of any link (RedisError, OSError); returns when
    ``closed()``. ``options``: the connections' (socket timeouts, retry).
    """
    cluster = connection.cluster_client(url, **options)
    try:
        owners: dict[str, tuple[ClusterNode, list[bytes]]] = {}
        for name in names:
            node = cluster.get_node_from_key(name)
            if node is None:
                raise RedisConnectionError(f"no master serves the slot of {name!r}")
            owners.setdefault(node.name, (node, []))[1].append(name)
        inbox: gevent.queue.Queue[Any] = gevent.queue.Queue()
        done: list[Event] = []
        readers = []
        for node, own in owners.values():
            confirmed = Event()
            done.append(confirmed)
            client = connection.node_client(cluster, node, **options)
            readers.append(gevent.spawn(_read, client, own, confirmed, inbox, closed,
                                        timeout, idle_ping, poll))
        try:
            announced = False
            while not closed():
                try:
                    item = inbox.get(timeout=poll)
                except gevent.queue.Empty:
                    item = None
                if isinstance(item, BaseException):
                    raise item
                if item is not None and item is not _CONFIRMED:
                    yield item
                elif not announced and all(event.is_set() for event in done):
                    announced = True
                    yield SUBSCRIBED
        finally:
            gevent.killall(readers, block=True, timeout=1.0)
    finally:
        cluster.close()


def _read(client: Any, names: list[bytes], confirmed: Event, inbox: gevent.queue.Queue[Any],
          closed: Callable[[], bool], timeout: float, idle_ping: float, poll: float) -> None:
    """One master's link: its channels' messages (and errors) into ``inbox``."""
    pubsub = client.pubsub()
    try:
        for name in names:  # one per command: a command's channels must share a slot
            pubsub.ssubscribe(name)
        waiting = set(names)
        for message in live_messages(pubsub, confirmed, closed, timeout, idle_ping, poll):
            kind = message.get("type")
            if kind == "smessage":
                inbox.put(message)
            elif kind == "ssubscribe":
                waiting.discard(message.get("channel"))
                if not waiting and not confirmed.is_set():
                    confirmed.set()
                    inbox.put(_CONFIRMED)
            elif kind == "sunsubscribe":
                # The server dropped a channel (its slot moved): subscribe again, all of them.
                raise RedisConnectionError(f"Redis dropped the subscription to {message.get('channel')!r}")
    except Exception as exc:  # handed to the consumer, which raises it
        inbox.put(exc)
    finally:
        try:
            pubsub.close()
            client.close()
        except Exception:
            pass
