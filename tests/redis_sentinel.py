"""A Redis master, its replica and three Sentinels, on free loopback ports (tests/redis_server.py).

Started and stopped by pid; ready once every Sentinel knows the replica and
the two other Sentinels, so that a failover can happen. ``fail_over()``
SIGKILLs the master and waits until the Sentinels name the promoted replica.
"""
from __future__ import annotations

from collections.abc import Mapping

import redis

from tests import harness
from tests.harness import wait_for
from tests.redis_server import RedisServer

MASTER_NAME = "barrel"
DOWN_AFTER_MS = 1000


class SentinelServer(RedisServer):
    """redis-server --sentinel, watching one master (quorum 2)."""

    def __init__(self, master_port: int) -> None:
        super().__init__()
        self.master_port = master_port
        self.conf = harness.FILES_DIR / f"barrel-test-sentinel-{self.port}.conf"

    def command(self) -> list[str]:
        # Sentinel rewrites its config file: a new one at each start.
        self.conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", "daemonize no", f"dir {self.dir}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1", "",
        ]))
        return [self.binary, str(self.conf), "--sentinel"]

    def master_port_now(self) -> int | None:
        try:
            found = self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        except redis.RedisError:
            return None
        return int(found[1]) if found else None

    def knows(self, replicas: int, sentinels: int) -> bool:
        try:
            seen_replicas = self.client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            seen_sentinels = self.client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
        except redis.RedisError:
            return False
        healthy = [r for r in seen_replicas if "s_down" not in _fields(r).get("flags", "")
                   and _fields(r).get("master-link-status") == "ok"]
        return len(healthy) >= replicas and len(seen_sentinels) >= sentinels

    def stop(self) -> None:
        super().stop()
        self.conf.unlink(missing_ok=True)


def _fields(entry: Mapping[bytes, bytes]) -> dict[str, str]:
    """A SENTINEL REPLICAS entry (redis-py parses it into a dict of bytes)."""
    return {k.decode(): v.decode() for k, v in entry.items()}


class SentinelGroup:
    """A master, one replica of it, three Sentinels."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [SentinelServer(self.master.port) for _ in range(3)]
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.start()
        wait_for(lambda: self.replica.client.info("replication").get("master_link_status") == "up", 20,
                 "the replica in sync with the master")
        for sentinel in self.sentinels:
            sentinel.start()
        # Sentinels find the replica in the master's INFO (every 10 s) and each
        # other on the master's hello channel (every 2 s).
        wait_for(lambda: all(s.knows(replicas=1, sentinels=2) for s in self.sentinels), 40,
                 "every Sentinel to know the replica and the two other Sentinels", interval=0.2)
        return self

    def fail_over(self) -> None:
        """SIGKILL the master; return once the Sentinels name the replica and it is a master."""
        self.master.kill()
        wait_for(lambda: all(s.master_port_now() == self.replica.port for s in self.sentinels)
                 and self.replica.client.info("replication").get("role") == "master", 30,
                 "the Sentinels to promote the replica", interval=0.1)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()
