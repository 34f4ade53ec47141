"""A Redis Cluster of the test's own: N masters, optionally a replica each, on free loopback ports.

Each node is a tests/redis_server.RedisServer with cluster mode on (its
cluster bus on another free port, a node timeout of 1 s so that a failover
takes about two seconds). ``start()`` creates the cluster with
``redis-cli --cluster create`` and returns once every node sees every slot
served and every replica is in sync (a master killed before its replica
synced is never replaced). ``fail_over(node)`` SIGKILLs a master and waits
until its replica took its slots.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from tests.harness import free_port, wait_for
from tests.redis_server import RedisServer

NODE_TIMEOUT_MS = 1000


class ClusterNode(RedisServer):
    def __init__(self) -> None:
        super().__init__(extra_args=["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                     "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                                     "--cluster-require-full-coverage", "no"])
        self.extra_args += ["--cluster-config-file", str(self.dir / "nodes.conf")]

    def info(self, section: str) -> dict[str, str]:
        try:
            text = self.client.execute_command("CLUSTER", "INFO") if section == "cluster" else None
            if text is not None:
                raw = text.decode() if isinstance(text, bytes) else str(text)
                return dict(line.split(":", 1) for line in raw.split() if ":" in line)
            return {k: str(v) for k, v in self.client.info(section).items()}
        except redis.RedisError:
            return {}

    def role(self) -> str:
        return self.info("replication").get("role", "")


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each; ``url`` names every node."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [ClusterNode() for _ in range(masters * (1 + replicas))]
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        self.url = f"redis+cluster://{hosts}"

    def start(self) -> RedisCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is not installed (apt-get install redis-tools)", pytrace=False)
        for node in self.nodes:
            node.start()
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
        wait_for(self._ready, 30, "every cluster node to serve all slots and every replica in sync",
                 interval=0.1)
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            cluster = node.info("cluster")
            if cluster.get("cluster_state") != "ok" or cluster.get("cluster_slots_ok") != "16384":
                return False
            if node.role() == "slave" and node.info("replication").get("master_link_status") != "up":
                return False
        return sum(1 for n in self.nodes if n.role() == "master") == len(self.nodes) // (1 + self.replicas)

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.role() == "master"]

    def owner(self, slot: int) -> ClusterNode:
        """The live master serving ``slot``."""
        for node in self.masters():
            for start, end, *_rest in node.client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(_rest[0][1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no live master serves slot {slot}")

    def fail_over(self, master: ClusterNode) -> ClusterNode:
        """SIGKILL ``master``; return its replica once that serves the slots."""
        replica_of = {n: n.info("replication").get("master_port") for n in self.nodes if n.role() == "slave"}
        replicas = [n for n, port in replica_of.items() if port == str(master.port)]
        assert replicas, f"node {master.port} has no replica to promote"
        master.kill()
        wait_for(lambda: any(r.role() == "master" for r in replicas)
                 and all(n.info("cluster").get("cluster_state") == "ok"
                         for n in self.nodes if n is not master), 30,
                 f"a replica of {master.port} promoted", interval=0.1)
        return next(r for r in replicas if r.role() == "master")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
