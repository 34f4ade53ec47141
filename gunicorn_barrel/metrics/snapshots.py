"""Snapshot files: each barrel process's metrics in ``<runtime dir>/metrics/<role>-<pid>.json``.

Every process of an instance (arbiter, workers, side processes) replaces its
file about once a second (written aside, then ``os.replace``: a reader never
sees half a file). Readers (the Prometheus exposition, the exporter's statsd
sender, ``gunicorn-barrel status``) take the files of live writers only: a
file whose pid is gone, or now belongs to another process (its start time
differs), is skipped, and removed by readers asked to tidy up. The runtime
directory is private (0700): only the instance's user (and root) read them.

A file::

    {"version": 1, "role": "worker", "pid": 4242, "start_ticks": 81234, "started": 1764590000.5,
     "written": 1764590100.1, "series": [[name, [label values], value], ...],
     "histograms": [[name, [label values], [bucket counts..., +Inf], sum], ...], "info": {...}}
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from gunicorn_barrel.metrics import procfs
from gunicorn_barrel.metrics.recorder import Recorder

log = logging.getLogger("gunicorn_barrel.metrics")

DIR = "metrics"
INTERVAL = 1.0  # seconds between two snapshots of a process


def directory(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, DIR)


def path(runtime_dir: str, role: str, pid: int) -> str:
    return os.path.join(directory(runtime_dir), f"{role}-{pid}.json")


def write(runtime_dir: str, role: str, recorder: Recorder, info: dict[str, Any] | None = None) -> None:
    """Replace this process's snapshot file with ``recorder``'s numbers now (OSError if it cannot)."""
    pid = os.getpid()
    own = procfs.stat(pid)
    data = recorder.snapshot(role)
    data.update(role=role, pid=pid, start_ticks=own.start_ticks if own else 0,
                started=own.start_time if own else 0.0, written=time.time(), info=info or {})
    folder = directory(runtime_dir)
    try:
        # mkdir, not makedirs: a late snapshot must not bring back a removed runtime dir.
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    tmp = os.path.join(folder, f".{role}-{pid}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path(runtime_dir, role, pid))


def remove(runtime_dir: str, role: str, pid: int) -> None:
    """Remove a process's snapshot (it is exiting)."""
    try:
        os.unlink(path(runtime_dir, role, pid))
    except FileNotFoundError:
        pass


def read_live(runtime_dir: str, tidy: bool = False) -> list[dict[str, Any]]:
    """The snapshots of live processes, arbiter first then by role and pid.

    PermissionError when the runtime directory is not ours to read.
    ``tidy``: remove the files of processes that are gone.
    """
    folder = directory(runtime_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        if not os.path.isdir(runtime_dir):
            raise
        return []
    found = []
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        snapshot = _load(os.path.join(folder, name))
        if snapshot is None:
            continue
        if not procfs.alive(int(snapshot["pid"]), int(snapshot["start_ticks"])):
            if tidy:
                remove(runtime_dir, str(snapshot["role"]), int(snapshot["pid"]))
            continue
        found.append(snapshot)
    order = {"arbiter": 0, "worker": 1}
    return sorted(found, key=lambda s: (order.get(s["role"], 2), s["role"], s["pid"]))


def _load(file: str) -> dict[str, Any] | None:
    try:
        with open(file) as fh:
            data = json.load(fh)
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None  # removed meanwhile, or not ours
    if not isinstance(data, dict) or data.get("version") != 1:
        return None
    if not all(k in data for k in ("role", "pid", "start_ticks", "series", "histograms")):
        return None
    return data


class Writer:
    """Writes a process's snapshot at most every ``interval`` seconds, from its own loop."""

    def __init__(self, runtime_dir: str, role: str, recorder: Recorder, interval: float = INTERVAL) -> None:
        self.runtime_dir = runtime_dir
        self.role = role
        self.recorder = recorder
        self.interval = interval
        self._next = 0.0
        self._failed = False

    def due(self, now: float) -> bool:
        return now >= self._next

    def write(self, now: float, info: dict[str, Any] | None = None) -> None:
        """Write now; an error is logged once (only observers need the file)."""
        self._next = now + self.interval
        try:
            write(self.runtime_dir, self.role, self.recorder, info)
        except OSError as exc:
            if not self._failed and os.path.isdir(self.runtime_dir):
                log.warning("cannot write the metrics snapshot in %s: %s", self.runtime_dir, exc)
            self._failed = True

    def remove(self) -> None:
        remove(self.runtime_dir, self.role, os.getpid())
