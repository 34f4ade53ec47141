"""This process's barrel metrics, as plain numbers: what a snapshot file carries.

Every process keeps its own cheap counts (an attribute increment on the hot
paths) and writes them to its snapshot file about once a second
(``snapshots``); the reading side (Prometheus, statsd, the status command)
merges the files. Nothing here takes a lock, does I/O or imports a library.

Code that counts asks once for its ``Series`` or ``Histogram`` (by metric
and label values) and keeps it. Counts that already live elsewhere (the bus
client's ``counters``, the slow-client policy's) are copied in when a
snapshot is taken, by a source registered with ``add_source``: one count,
never two.

After fork the child keeps the objects its parent handed out but every value
is zero and every source gone: a worker reports its own numbers, not the
arbiter's (``os.register_at_fork``).
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Mapping
from typing import Any

from gunicorn_barrel.metrics.catalog import Metric, of_role

SNAPSHOT_VERSION = 1


class Series:
    """One counter or gauge with its label values: ``value`` is read and set directly."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0


class Histogram:
    """Observations counted in fixed buckets (``le`` upper bounds, +Inf last), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le, "less or equal").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0


Key = tuple[str, tuple[str, ...]]
Source = Callable[["Recorder"], None]


class Recorder:
    """The metrics of one process, by (metric name, label values)."""

    def __init__(self) -> None:
        self._series: dict[Key, Series] = {}
        self._histograms: dict[Key, Histogram] = {}
        self._sources: list[Source] = []

    def series(self, metric: Metric, *labels: str) -> Series:
        """The counter or gauge of ``metric`` with these label values (made at the first call)."""
        assert metric.kind != "histogram" and len(labels) == len(metric.labels), metric.name
        key = (metric.name, labels)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series()
        return found

    def histogram(self, metric: Metric, *labels: str) -> Histogram:
        """The histogram of ``metric`` with these label values (made at the first call)."""
        assert metric.kind == "histogram" and len(labels) == len(metric.labels), metric.name
        key = (metric.name, labels)
        found = self._histograms.get(key)
        if found is None:
            found = self._histograms[key] = Histogram(metric.buckets)
        return found

    def add_source(self, source: Source) -> None:
        """Call ``source(recorder)`` before each snapshot, to copy in counts kept elsewhere."""
        self._sources.append(source)

    def remove_source(self, source: Source) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def copy_counters(self, counters: Mapping[str, float], role: str) -> None:
        """Set every metric of ``role`` that has a ``source`` from ``counters`` (absent: 0)."""
        for metric in of_role(role):
            if metric.source is not None and not metric.labels:
                self.series(metric).value = counters.get(metric.source, 0)

    def snapshot(self, role: str) -> dict[str, Any]:
        """The metrics of ``role`` as JSON data (the ``series`` and ``histograms`` of a snapshot file)."""
        for source in list(self._sources):
            source(self)
        names = {metric.name for metric in of_role(role)}
        return {
            "version": SNAPSHOT_VERSION,
            "series": [[name, list(labels), s.value] for (name, labels), s in self._series.items()
                       if name in names],
            "histograms": [[name, list(labels), list(h.counts), h.sum]
                           for (name, labels), h in self._histograms.items() if name in names],
        }

    def reset(self) -> None:
        """Zero every value in place and forget the sources (in a forked child)."""
        for s in self._series.values():
            s.value = 0
        for h in self._histograms.values():
            h.reset()
        self._sources.clear()


_process = Recorder()
os.register_at_fork(after_in_child=_process.reset)


def process() -> Recorder:
    """This process's recorder."""
    return _process
