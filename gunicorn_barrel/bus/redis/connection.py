"""Redis connection pools from a URL: one server, or the master that Sentinel names.

    redis://host:port/db, rediss://..., unix:///path?db=0     one server (redis-py's own URLs)
    redis+sentinel://[[user]:password@]h1:26379[,h2:26379...]/master[/db]

With Sentinel, each new connection asks the Sentinels (in turn) for the
master's address, and a connection to a server that is no longer the master
is refused (redis-py's SentinelManagedConnection): after a failover, what
reconnects reaches the promoted replica. What reconnects, and what it does
about what it missed, is each caller's business (the bus replays, the store
resubscribes). The password is the master's; Sentinels without a password.
"""
from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from gunicorn_barrel.config.values import SENTINEL_SCHEME, sentinel_address


class _SentinelBlockingPool(SentinelConnectionPool, redis.BlockingConnectionPool):  # type: ignore[misc]
    """Sentinel's pool that waits ``timeout`` s for a free connection, as BlockingConnectionPool."""


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def pool(url: str, max_connections: int | None, wait_for_free: float | None = None,
         **options: Any) -> redis.ConnectionPool:
    """A pool of up to ``max_connections`` (None: no bound) to the server (or master) ``url`` names.

    ``wait_for_free``: seconds to wait for a free connection when all are busy
    (BlockingConnectionPool); None: fail at once. ``options``: the connections'
    (socket_timeout, retry, ...); the Sentinels are asked with the same timeouts.
    """
    if not is_sentinel(url):
        if wait_for_free is None:
            return redis.ConnectionPool.from_url(url, max_connections=max_connections, **options)
        return redis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                     timeout=wait_for_free, **options)
    address = sentinel_address(url)
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}
    sentinels = Sentinel(list(address.sentinels), sentinel_kwargs=timeouts)
    kwargs = dict(options, db=address.db, username=address.username, password=address.password,
                  max_connections=max_connections)
    if wait_for_free is None:
        return SentinelConnectionPool(address.master, sentinels, **kwargs)
    return _SentinelBlockingPool(address.master, sentinels, timeout=wait_for_free, **kwargs)


def client(url: str, max_connections: int | None, wait_for_free: float | None = None,
           **options: Any) -> redis.Redis:
    """A client over ``pool(url, ...)``."""
    return redis.Redis(connection_pool=pool(url, max_connections, wait_for_free, **options))
