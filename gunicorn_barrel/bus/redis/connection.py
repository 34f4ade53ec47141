"""Redis clients from a URL: one server, the master that Sentinel names, or a Redis Cluster.

    redis://host:port/db, rediss://..., unix:///path?db=0     one server (redis-py's own URLs)
    redis+sentinel://[[user]:password@]h1:26379[,h2:26379...]/master[/db]
    redis+cluster://[[user]:password@]h1:7000[,h2:7001...]

With Sentinel, each new connection asks the Sentinels (in turn) for the
master's address, and a connection to a server that is no longer the master
is refused (redis-py's SentinelManagedConnection): after a failover, what
reconnects reaches the promoted replica. What reconnects, and what it does
about what it missed, is each caller's business (the bus replays, the store
resubscribes). The password is the master's; Sentinels without a password.

With a cluster, the nodes named are where the client first learns the
layout (CLUSTER SLOTS); a client routes each command to the master serving
its key's (or shard channel's) slot, and learns the layout again after an
error or a MOVED reply, so it follows a failover by itself. Sharded pub/sub
subscriptions are per master (``cluster.ShardedSubscription``).
"""
from __future__ import annotations

from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel, SentinelConnectionPool

from gunicorn_barrel.config.values import cluster_address, is_cluster, is_sentinel, sentinel_address

# A client of one server (or master) or of a cluster: the commands the bus and the store use.
AnyClient = redis.Redis | RedisCluster

# What a failing Redis raises. redis-py's cluster client raises RedisClusterException,
# which is not a RedisError, when no node named answers or a slot has no master.
FAILURES: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)


class _SentinelBlockingPool(SentinelConnectionPool, redis.BlockingConnectionPool):  # type: ignore[misc]
    """Sentinel's pool that waits ``timeout`` s for a free connection, as BlockingConnectionPool."""


def pool(url: str, max_connections: int | None, wait_for_free: float | None = None,
         **options: Any) -> redis.ConnectionPool:
    """A pool of up to ``max_connections`` (None: no bound) to the server (or master) ``url`` names.

    ``wait_for_free``: seconds to wait for a free connection when all are busy
    (BlockingConnectionPool); None: fail at once. ``options``: the connections'
    (socket_timeout, retry, ...); the Sentinels are asked with the same timeouts.
    Not for a cluster URL (``cluster_client``).
    """
    if is_cluster(url):
        raise ValueError("a redis+cluster:// URL has no single pool: use cluster_client()")
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


def cluster_client(url: str, max_connections: int | None = None, **options: Any) -> RedisCluster:
    """A RedisCluster client of the ``redis+cluster://`` URL; it learns the layout at once.

    ``options`` as for ``pool``; ``retry`` also bounds the cluster's own
    retries after a connection error (0: none, a write is never sent twice).
    Raises RedisClusterException when no node named answers.
    """
    address = cluster_address(url)
    kwargs = dict(options, username=address.username, password=address.password)
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in address.nodes], **kwargs)


def node_client(cluster: RedisCluster, node: ClusterNode, **options: Any) -> redis.Redis:
    """A plain client of one node of ``cluster`` (for its shard channels), with ``options``."""
    kwargs = cluster.get_connection_kwargs()
    return redis.Redis(host=node.host, port=node.port, username=kwargs.get("username"),
                       password=kwargs.get("password"), **options)


def client(url: str, max_connections: int | None, wait_for_free: float | None = None,
           **options: Any) -> AnyClient:
    """A client of ``url``: over ``pool(url, ...)``, or a cluster client."""
    if is_cluster(url):
        return cluster_client(url, max_connections, **options)
    return redis.Redis(connection_pool=pool(url, max_connections, wait_for_free, **options))


def close(client: AnyClient) -> None:
    """Close ``client`` and every connection it holds (its pool's too; errors ignored)."""
    try:
        client.close()
        if isinstance(client, redis.Redis):
            client.connection_pool.disconnect()
    except FAILURES:
        pass
