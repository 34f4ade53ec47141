"""The open-files limit that workers holding long-lived connections need.

Each WebSocket or long-polling client keeps a socket open for as long as it
stays, so a gevent worker holds up to ``worker_connections`` of them, plus a
few descriptors of its own (bus, store, handoffs, logs: ``SPARE``). Many
systems start services with a soft limit of 1,024: a worker then refuses
connections (EMFILE) long before ``worker_connections``. As servers made for
many connections do, the arbiter raises its soft limit (which the workers
inherit) up to the hard limit, which only root or the service manager can
raise (``ulimit -Hn``, systemd's ``LimitNOFILE=``).
"""
from __future__ import annotations

import dataclasses
import resource

SPARE = 256


@dataclasses.dataclass(frozen=True)
class OpenFiles:
    needed: int  # worker_connections + SPARE
    soft_before: int
    soft: int  # after
    hard: int

    @property
    def raised(self) -> bool:
        return self.soft != self.soft_before

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def ensure(worker_connections: int) -> OpenFiles:
    """Raise this process's soft open-files limit to what ``worker_connections`` needs, if the
    hard limit allows (never lowers it)."""
    needed = worker_connections + SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return OpenFiles(needed, soft, target, hard)
    return OpenFiles(needed, soft, soft, hard)
