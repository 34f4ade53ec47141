"""The load generator: several node processes of bench/js/broadcast_load.mjs, driven as one.

Clients are split evenly over the node processes; each process spreads its
clients evenly over the server's workers, so the whole load is spread too.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from tests.harness import REPO
from tests.json_lines import JsonLinesProcess
from tests.node_clients import NODE

SCRIPT = REPO / "bench" / "js" / "broadcast_load.mjs"
LANES = 50  # handshakes in flight per node process
CONNECT_TIMEOUT = 240.0


class LoadError(RuntimeError):
    pass


class Load:
    """``count`` node processes of WebSocket clients against ``url``."""

    def __init__(self, url: str, count: int, log_dir: Path) -> None:
        assert NODE is not None, "needs `node` on PATH"
        self.procs: list[JsonLinesProcess] = []
        for i in range(count):
            self.procs.append(JsonLinesProcess([NODE, str(SCRIPT), url], log_dir / f"load-{i}.log"))

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.procs]

    def _all(self, command: dict[str, Any] | list[dict[str, Any]], kind: str,
             timeout: float) -> list[dict[str, Any]]:
        commands = command if isinstance(command, list) else [command] * len(self.procs)
        for proc, cmd in zip(self.procs, commands, strict=True):
            proc.send(cmd)
        return [self._expect(proc, kind, timeout) for proc in self.procs]

    @staticmethod
    def _expect(proc: JsonLinesProcess, kind: str, timeout: float) -> dict[str, Any]:
        try:
            return proc.expect(kind, timeout)
        except AssertionError as exc:
            raise LoadError(str(exc)) from None

    def connect(self, total: int, workers: list[int] | None) -> dict[str, Any]:
        """Open clients until ``total`` are connected; with ``workers``, exactly even over them.

        Without ``workers`` (the connects/s and idle RSS figures) clients land wherever
        the server puts them; the spread is recorded.
        """
        share = [total // len(self.procs) + (i < total % len(self.procs)) for i in range(len(self.procs))]
        if workers:
            caps = [math.ceil(n / len(workers)) for n in share]
        commands = [{"cmd": "connect", "n": n, "lanes": LANES, "cap": caps[i] if workers else None}
                    for i, n in enumerate(share)]
        answers = self._all(commands, "connected", CONNECT_TIMEOUT)
        by_pid: Counter[str] = Counter()
        for answer in answers:
            by_pid.update(answer["by_pid"])
        extensions: Counter[str] = Counter()
        for answer in answers:
            extensions.update(answer["extensions"])
        result = {
            "clients": sum(a["clients"] for a in answers),
            "handshakes": sum(a["handshakes"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": [a["errors"] for a in answers if a["errors"]],
            "seconds": max(a["seconds"] for a in answers),
            "by_worker": dict(sorted(by_pid.items())),
            "extensions": dict(extensions),
        }
        result["handshakes_per_s"] = result["handshakes"] / result["seconds"]
        if result["clients"] != total:
            raise LoadError(f"connected {result['clients']} of {total} clients: {result}")
        return result

    def spread(self, total: int, workers: list[int]) -> dict[str, Any]:
        """Keep ``total`` clients, exactly even over ``workers`` (closing, then opening as needed)."""
        per_proc = total // len(self.procs)
        if per_proc * len(self.procs) != total or per_proc % len(workers):
            raise LoadError(f"{total} clients do not split evenly over {len(self.procs)} node processes "
                            f"and {len(workers)} workers")
        self._all({"cmd": "trim", "per_pid": per_proc // len(workers)}, "trimmed", 30)
        connected = self.connect(total, workers)
        wanted = {str(pid): total // len(workers) for pid in workers}
        if connected["by_worker"] != wanted:
            raise LoadError(f"clients not spread evenly: {connected['by_worker']} (wanted {wanted})")
        return connected

    def step(self, origin: int, rate: float, seconds: float, tag: int, drain: float) -> dict[str, Any]:
        """Worker ``origin`` broadcasts ``rate`` a second for ``seconds``; what the clients got."""
        armed = self._all({"cmd": "arm", "tag": tag}, "armed", 30)
        clients = sum(a["clients"] for a in armed)
        control = self.procs[0]  # holds clients on every worker (see spread)
        control.send({"cmd": "blast", "pid": origin, "rate": rate, "seconds": seconds, "tag": tag})
        blasted = self._expect(control, "blasted", seconds + 150)
        collected = self._all({"cmd": "collect", "expected": blasted["sent"], "timeout": drain},
                              "collected", drain + 30)
        hist: Counter[float] = Counter()
        for answer in collected:
            hist.update({int(k) * answer["bucket_ms"]: v for k, v in answer["buckets"].items()})
        received = sum(a["received"] for a in collected)
        expected = blasted["sent"] * clients
        return {
            "rate": rate, "seconds": seconds, "clients": clients, "sent": blasted["sent"],
            "send_elapsed_s": blasted["elapsed"], "expected": expected, "received": received,
            "missing": expected - received, "stale": sum(a["stale"] for a in collected),
            "drops": [a["drops"] for a in collected if a["drops"]],
            "deliveries_per_s": received / max(blasted["elapsed"], seconds),
            "latency_ms": histogram_summary(hist),
        }

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def histogram_summary(hist: Counter[float]) -> dict[str, float]:
    """p50, p99 and max (ms) of a histogram {bucket start ms: count}."""
    n = sum(hist.values())
    if not n:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(hist.items())
    out = {}
    for name, q in (("p50", 50), ("p99", 99)):
        rank, seen = max(1, math.ceil(q / 100 * n)), 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                out[name] = value
                break
    out["max"] = ordered[-1][0]
    return out

