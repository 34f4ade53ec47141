"""gunicorn config for instances on several hosts sharing one bus through Redis.

    # the same file on every host (or several instances on one host, each with its own -b)
    BARREL_BUS=redis://redis.internal:6379/0 \
        gunicorn -c example_confs/redis_bus.py -b 0.0.0.0:8000 demos.chat.app:wsgi

No broadcaster runs: every worker of every instance publishes to and
subscribes at Redis. The store (gunicorn_barrel.store) follows the bus to the
same Redis, so every instance sees the same keys. BARREL_* environment
variables win over the values below, so the file needs no per-host edit.
Load balancers: WebSocket needs nothing more; long-polling sessions must stick
to one instance (barrel routes them between the workers of an instance).

With Sentinel, name the Sentinels and the master instead; the workers follow
a failover to the promoted replica (README, "Redis bus"):

    BARREL_BUS=redis+sentinel://10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379/mymaster/0

On a Redis Cluster (Redis 7+), name some of its nodes: frames go by sharded
pub/sub, spread over the shards, and each worker subscribes only to what
concerns it (README, "Redis bus"):

    BARREL_BUS=redis+cluster://10.0.0.5:7000,10.0.0.6:7000,10.0.0.7:7000
"""
from gunicorn_barrel import hooks

worker_class = "gunicorn_barrel.workers.BarrelWorker"
workers = 4
hooks.install(
    globals(),
    bus="redis://127.0.0.1:6379/0",
    # Several apps may share one Redis: each has its own namespace.
    bus_namespace="chat",
)
