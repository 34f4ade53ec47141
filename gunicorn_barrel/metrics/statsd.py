"""barrel's metrics for statsd, in gunicorn's statsd dialect: what to send (sans-io) and the sending.

statsd has no labels and aggregates by itself, so the processes of the
instance are summed, and label values become parts of the name, in the
order the catalog declares them (``barrel_clients{transport="websocket"}``
-> ``<prefix>barrel.clients.websocket``). Every ``interval`` the exporter sends:

- counters: ``name:<increase since the last send>|c``, only when it grew
  (``_total`` dropped from the name). A process first seen counts from 0 if
  it started after the last send; the exporter's first send only takes note;
  what a process counted between the last send and its exit is not sent;
- gauges: ``name:<value>|g``, the sum over the processes (the maximum for a
  peak; start times are not sent);
- histograms (latencies): ``name:<mean in ms>|ms|@<1/n>``, the mean of the n
  observations of the interval with the sample rate that makes statsd count
  n of them (``_seconds`` dropped from the name);

prefixed with gunicorn's ``statsd_prefix`` (a dot added, as gunicorn does)
and followed by ``|#<dogstatsd_tags>`` when those are set. Lines go out
several to a datagram, separated by newlines, each datagram at most 1,432
bytes. Process CPU and memory are not sent.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from typing import Any

from gunicorn_barrel.metrics import catalog

MAX_DATAGRAM = 1432  # fits an Ethernet MTU with IP and UDP headers, as statsd clients do

Process = tuple[int, int]  # (pid, start ticks)
SeriesKey = tuple[str, tuple[str, ...]]


def prefix_of(statsd_prefix: str) -> str:
    """gunicorn's rule: a non-empty prefix ends with exactly one dot."""
    return statsd_prefix.rstrip(".") + "." if statsd_prefix.strip(".") else ""


def stat_name(metric: catalog.Metric, labels: Iterable[str]) -> str:
    base = metric.name.removeprefix("barrel_")
    for suffix in ("_total", "_seconds"):
        base = base.removesuffix(suffix)
    parts = ["barrel", base, *(re.sub(r"[^A-Za-z0-9_-]", "_", str(v)) or "_" for v in labels)]
    return ".".join(parts)


class Deltas:
    """What was sent already, per process: turns the live snapshots into the lines of one send."""

    def __init__(self) -> None:
        self._counters: dict[tuple[Process, SeriesKey], float] = {}
        self._histograms: dict[tuple[Process, SeriesKey], tuple[int, float]] = {}
        self._processes: set[Process] = set()
        self._last_pass: float | None = None

    def lines(self, live: list[dict[str, Any]], now: float) -> list[str]:
        """The statsd lines (without prefix) for ``live`` snapshots taken at ``now`` (wall clock)."""
        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        timers: dict[str, tuple[int, float]] = {}
        counters_now: dict[tuple[Process, SeriesKey], float] = {}
        histograms_now: dict[tuple[Process, SeriesKey], tuple[int, float]] = {}
        processes: set[Process] = set()
        for snapshot in live:
            process = (int(snapshot["pid"]), int(snapshot["start_ticks"]))
            processes.add(process)
            # Counted from 0: a series that appears in a process seen before, or every series
            # of a process that started since; else (the exporter's start) only taken note of.
            new = process in self._processes or (
                self._last_pass is not None and float(snapshot.get("started", 0)) >= self._last_pass)
            for name, labels, value in snapshot["series"]:
                metric = _declared(name)
                if metric is None:
                    continue
                key = (process, (name, tuple(labels)))
                stat = stat_name(metric, labels)
                if metric.kind == "counter":
                    counters_now[key] = value
                    before = self._counters.get(key, 0.0 if new else None)
                    if before is not None and value > before:
                        counters[stat] = counters.get(stat, 0) + value - before
                elif metric.statsd == "sum":
                    gauges[stat] = gauges.get(stat, 0) + value
                elif metric.statsd == "max":
                    gauges[stat] = max(gauges.get(stat, value), value)
            for name, labels, counts, total in snapshot["histograms"]:
                metric = _declared(name)
                if metric is None:
                    continue
                key = (process, (name, tuple(labels)))
                count = sum(counts)
                histograms_now[key] = (count, total)
                before_h = self._histograms.get(key, (0, 0.0) if new else None)
                if before_h is not None and count > before_h[0]:
                    stat = stat_name(metric, labels)
                    n, s = timers.get(stat, (0, 0.0))
                    timers[stat] = (n + count - before_h[0], s + total - before_h[1])
        first = self._last_pass is None
        self._counters, self._histograms, self._last_pass = counters_now, histograms_now, now
        self._processes = processes
        if first:
            return []  # only took note of where every process stands
        out = [f"{stat}:{_number(v)}|c" for stat, v in sorted(counters.items())]
        out += [f"{stat}:{_number(v)}|g" for stat, v in sorted(gauges.items())]
        out += [f"{stat}:{_number(s / n * 1000)}|ms|@{1 / n:.6g}" for stat, (n, s) in sorted(timers.items())]
        return out


def _declared(name: str) -> catalog.Metric | None:
    try:
        return catalog.metric(name)
    except KeyError:
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def datagrams(lines: list[str], prefix: str, tags: str = "") -> list[bytes]:
    """Prefixed (and tagged) lines packed into datagrams of at most MAX_DATAGRAM bytes."""
    suffix = f"|#{tags}" if tags else ""
    out: list[bytes] = []
    current = b""
    for line in lines:
        item = f"{prefix}{line}{suffix}".encode("ascii", "replace")
        if current and len(current) + 1 + len(item) > MAX_DATAGRAM:
            out.append(current)
            current = b""
        current = current + b"\n" + item if current else item
    if current:
        out.append(current)
    return out


def parse_address(text: str) -> tuple[int, Any]:
    """``host:port``, ``[v6]:port`` or ``unix:/path`` -> (address family, address)."""
    if text.startswith("unix:"):
        return socket.AF_UNIX, text.removeprefix("unix:")
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


class Sender:
    """A UDP (or unix datagram) socket to the statsd server; sending never raises."""

    def __init__(self, address: str, prefix: str, tags: str = "") -> None:
        family, self.address = parse_address(address)
        self.prefix = prefix_of(prefix)
        self.tags = tags
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.failures = 0

    def send(self, lines: list[str]) -> None:
        for datagram in datagrams(lines, self.prefix, self.tags):
            try:
                self.sock.sendto(datagram, self.address)
            except OSError:
                self.failures += 1  # statsd is fire-and-forget, as gunicorn's own client

    def close(self) -> None:
        self.sock.close()
