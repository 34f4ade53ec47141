"""Broadcast figures: one-way latency at a fixed rate, and the highest rate with p99 <= 50 ms.

A rate is in broadcasts a second from one worker; deliveries/s = rate x clients.
A step passes when every client got every broadcast, the p99 one-way latency
is within the limit and the server kept the rate (sent them all within 5 % of
the step's time).
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from bench import cpu
from bench.peers.load import Load

P99_LIMIT_MS = 50.0
KEPT_RATE = 1.05
MIN_RATE = 1.0  # broadcasts/s: below it a step says little (a second apart, each one a burst)
IDLE_PCT = 15.0
IDLE_SAMPLE_S = 0.3
IDLE_WAIT = 10.0
_tags = itertools.count(1)


def process_cpu(named: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process."""
    return {name: cpu.process_seconds([pid]) for name, pid in named.items()}


def measured_step(load: Load, origin: int, rate: float, seconds: float,
                  server_pids: Callable[[], dict[str, int]]) -> dict[str, Any]:
    """One step, with the CPU of the server (each process too), the load generator and everything
    else, in % of one core."""
    named = server_pids()
    ours = list(named.values()), load.pids()
    wait_for_idle(ours[0])
    began = time.monotonic()
    each = process_cpu(named)
    before = cpu.process_seconds(ours[0]), cpu.process_seconds(ours[1]), *cpu.machine_seconds()
    result = load.step(origin, rate, seconds, next(_tags), drain=max(3.0, seconds))
    after = cpu.process_seconds(ours[0]), cpu.process_seconds(ours[1]), *cpu.machine_seconds()
    each = {name: used - each[name] for name, used in process_cpu(named).items()}
    span = time.monotonic() - began  # the broadcasts and their delivery (the collect's wait included)
    server, clients, machine, steal = (100 * (a - b) / span for a, b in zip(after, before, strict=True))
    result["cpu_pct"] = {"server": server, "load": clients, "other": max(0.0, machine - server - clients),
                         "steal": steal}
    result["cpu_pct_by_process"] = {name: 100 * used / span for name, used in each.items()}
    result["passed"] = (result["sent"] > 0 and result["missing"] == 0
                        and result["latency_ms"]["p99"] <= P99_LIMIT_MS
                        and result["send_elapsed_s"] <= seconds * KEPT_RATE)
    print(f"    {rate:8.1f} broadcasts/s x {result['clients']} = "
          f"{result['deliveries_per_s']:10,.0f} deliveries/s"
          f"  p50 {result['latency_ms']['p50']:7.1f} ms p99 {result['latency_ms']['p99']:8.1f} ms"
          f"  missing {result['missing']:>7}  CPU server {server:3.0f} % load {clients:3.0f} %"
          f"  {'ok' if result['passed'] else 'FAIL'}", flush=True)
    return result


def wait_for_idle(pids: list[int], max_wait: float = IDLE_WAIT) -> float:
    """Wait until the server's processes use under IDLE_PCT of a core (backlogs of a previous step,
    disconnects of trimmed clients), ``max_wait`` s at most; the wait."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        used = cpu.process_seconds(pids)
        time.sleep(IDLE_SAMPLE_S)
        if 100 * (cpu.process_seconds(pids) - used) / IDLE_SAMPLE_S < IDLE_PCT:
            break
    return time.monotonic() - start


def search(step: Callable[[float], dict[str, Any]], first: dict[str, Any], max_steps: int,
           resolution: float = 1.15) -> dict[str, Any]:
    """Double (or halve, down to MIN_RATE) from the first step's rate until a pass and a fail
    bracket the limit, then bisect."""
    steps = [first]
    good = first["rate"] if first["passed"] else None
    bad = None if first["passed"] else first["rate"]
    while len(steps) < max_steps:
        if good is not None and bad is not None:
            if bad / good <= resolution:
                break
            rate = (good * bad) ** 0.5
        else:
            rate = good * 2 if good is not None else bad / 2  # type: ignore[operator]
            if rate < MIN_RATE:
                break
        result = step(rate)
        steps.append(result)
        if result["passed"]:
            good = max(good or 0.0, rate)
        else:
            bad = min(bad or float("inf"), rate)
    passed = [s for s in steps if s["passed"]]
    best = max(passed, key=lambda s: s["deliveries_per_s"]) if passed else None
    return {"best": best, "first_fail_rate": bad, "steps": steps}
