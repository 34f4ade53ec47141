"""In a worker of ``python -m bench.memory_breakdown``: where the bytes of idle clients go.

Registered by bench/peers/app.py when BENCH_MEMORY_PROBE is set, in the
worker (the app is imported after the fork): tracemalloc starts at import,
and the socket.io event ``memory_probe`` takes a baseline or answers what
grew since: traced bytes by package and by line, live objects by type,
greenlets, and the process's RSS.
"""
from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from collections import Counter
from typing import Any

import greenlet

FRAMES = 12
_baseline: dict[str, Any] = {}


def start() -> None:
    tracemalloc.start(FRAMES)


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))


def _types() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _package(filename: str) -> str:
    """The package that allocated: the first path part after site-packages, or stdlib / gunicorn_barrel."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/gunicorn_barrel/" in filename:
        return "gunicorn_barrel/" + filename.split("/gunicorn_barrel/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in filename:
        return "stdlib"
    return filename.rsplit("/", 1)[-1]


def _owner(traceback: Any) -> tuple[str, str]:
    """(package, file:line) of the innermost frame outside the stdlib: who asked for the bytes."""
    frames = list(reversed(traceback))  # tracemalloc lists the oldest frame first
    for frame in frames:
        if "/lib/python3" not in frame.filename or "site-packages/" in frame.filename:
            return _package(frame.filename), f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "stdlib", f"{frames[0].filename.rsplit('/', 1)[-1]}:{frames[0].lineno}"


def probe(action: str) -> dict[str, Any]:
    gc.collect()
    if action == "baseline":
        _baseline.update(snapshot=tracemalloc.take_snapshot(), types=_types(), rss_kb=_rss_kb(),
                         greenlets=sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet)))
        return {"pid": os.getpid(), "rss_kb": _baseline["rss_kb"]}
    now = tracemalloc.take_snapshot()
    stats = now.compare_to(_baseline["snapshot"], "traceback")
    by_package: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    for stat in stats:
        if stat.size_diff <= 0:
            continue
        package, line = _owner(stat.traceback)
        by_package[package] += stat.size_diff
        by_line[f"{package}: {line}"] += stat.size_diff
    types = _types()
    types.subtract(_baseline["types"])
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))
    return {
        "pid": os.getpid(),
        "rss_kb": _rss_kb(), "rss_kb_baseline": _baseline["rss_kb"],
        "traced_bytes": sum(s.size_diff for s in stats),
        "by_package": by_package.most_common(12),
        "by_line": by_line.most_common(15),
        "types": [(name, n) for name, n in types.most_common(15) if n > 0],
        "greenlets": greenlets - _baseline["greenlets"],
        "python": sys.version.split()[0],
    }
