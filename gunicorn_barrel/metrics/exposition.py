"""The Prometheus exposition of an instance: every live process's snapshot, read at scrape time.

Why a custom collector over snapshot files, not prometheus_client's metric
objects and its multiprocess mode: that mode keeps an mmap file per metric
and process and merges them, which suits processes that share one
prometheus_client registry. Barrel's processes already keep cheap counts of
their own (the bus clients' counters, the broadcaster's, the slow-client
policy's), several are not Python processes gunicorn forked (the side
processes are exec'd), and the status command reads the same files; so each
process writes one small JSON file a second and this collector turns the
live ones into metric families, each series labelled with the process's
``role`` and ``pid``. Process CPU and memory come from /proc at scrape time.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gunicorn_barrel.metrics import catalog, procfs, snapshots

# What generate_latest writes: the text format every Prometheus reads (newer
# prometheus_client releases name their default differently).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(metric: catalog.Metric) -> Metric:
    labels = [*catalog.COMMON_LABELS, *metric.labels]
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=labels)
    return HistogramMetricFamily(metric.name, metric.help, labels=labels)


def families(live: list[dict[str, Any]]) -> list[Metric]:
    """Metric families of the catalog, filled from ``live`` snapshots (and /proc)."""
    found = {metric.name: _family(metric) for metric in catalog.METRICS}
    for snapshot in live:
        common = [str(snapshot["role"]), str(snapshot["pid"])]
        for name, labels, value in snapshot["series"]:
            family = found.get(name)
            if family is not None:  # a name this version does not declare is left out
                family.add_metric([*common, *labels], value)  # type: ignore[attr-defined]
        for name, labels, counts, total in snapshot["histograms"]:
            metric = _declared(name)
            if metric is None or len(counts) != len(metric.buckets) + 1:
                continue
            found[name].add_metric([*common, *labels], _cumulative(metric.buckets, counts),  # type: ignore[attr-defined]
                                   total)
        _process(found, common, snapshot)
    return list(found.values())


def _declared(name: str) -> catalog.Metric | None:
    try:
        return catalog.metric(name)
    except KeyError:
        return None


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*map(repr, bounds), "+Inf"], counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


def _process(found: dict[str, Metric], common: list[str], snapshot: dict[str, Any]) -> None:
    found["barrel_process_start_time_seconds"].add_metric(common, snapshot.get("started", 0))  # type: ignore[attr-defined]
    stat = procfs.stat(int(snapshot["pid"]))
    if stat is not None:
        found["barrel_process_resident_memory_bytes"].add_metric(common, stat.rss_bytes)  # type: ignore[attr-defined]
        found["barrel_process_cpu_seconds_total"].add_metric(common, stat.cpu_seconds)  # type: ignore[attr-defined]


class SnapshotCollector:
    """A prometheus_client collector of one instance's runtime directory."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir

    def describe(self) -> list[Metric]:
        return []  # no reading at registration: the families appear at each scrape

    def collect(self) -> Iterator[Metric]:
        try:
            live = snapshots.read_live(self.runtime_dir)
        except OSError:
            live = []  # the instance is stopping
        yield from families(live)


def registry(runtime_dir: str) -> CollectorRegistry:
    """A registry holding only the instance's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(runtime_dir))  # type: ignore[arg-type]
    return reg


def render(runtime_dir: str) -> tuple[bytes, str]:
    """The Prometheus text exposition of the instance, and its content type."""
    return generate_latest(registry(runtime_dir)), CONTENT_TYPE
