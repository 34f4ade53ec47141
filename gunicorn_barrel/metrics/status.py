"""What ``gunicorn-barrel status`` shows of a running instance, read from its runtime directory.

The live processes' snapshots (``snapshots``) give the workers and their
clients, the side processes (the arbiter's snapshot: pid, start, restarts)
and the counters; the broadcaster's status file gives the federation links.
``gather`` builds the report as JSON data (``--json`` prints it as it is),
``render`` as text.
"""
from __future__ import annotations

import os
import time
from typing import Any

from gunicorn_barrel.metrics import catalog, locate, snapshots
from gunicorn_barrel.runtime import endpoints

# The main counters, summed over every process, as shown: (title, [(metric, label filter)...]).
MAIN_COUNTERS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("socket.io connects / disconnects", (("barrel_socketio_connects_total", ""),
                                          ("barrel_socketio_disconnects_total", ""))),
    ("emits / deliveries", (("barrel_emits_total", ""), ("barrel_deliveries_total", ""))),
    ("bus frames pushed / delivered", (("barrel_bus_frames_pushed_total", ""),
                                       ("barrel_bus_frames_delivered_total", ""))),
    ("bus frames resent / lost / gaps", (("barrel_bus_frames_resent_total", ""),
                                         ("barrel_bus_frames_lost_total", ""),
                                         ("barrel_bus_gaps_total", ""))),
    ("broadcaster frames published", (("barrel_broadcaster_frames_published_total", ""),)),
    ("slow clients cut / packets dropped", (("barrel_slow_clients_cut_total", ""),
                                            ("barrel_slow_client_packets_dropped_total", ""))),
    ("store operations / errors / timeouts", (("barrel_store_operations_total", ""),
                                              ("barrel_store_operations_total", 'result="error"'),
                                              ("barrel_store_operations_total", 'result="timeout"'))),
    ("handoffs sent / failed / received", (("barrel_handoffs_total", 'result="sent"'),
                                           ("barrel_handoffs_total", 'result="failed"'),
                                           ("barrel_handoffs_received_total", ""))),
)

def gather(runtime_dir: str, now: float | None = None) -> dict[str, Any]:
    """The report of the instance whose runtime directory is ``runtime_dir``."""
    now = time.time() if now is None else now
    try:
        live = snapshots.read_live(runtime_dir)
    except PermissionError:
        raise locate.denied(runtime_dir) from None
    except FileNotFoundError:
        raise locate.NotFound(f"{runtime_dir}: the instance has stopped") from None
    by_role: dict[str, list[dict[str, Any]]] = {}
    for snapshot in live:
        by_role.setdefault(snapshot["role"], []).append(snapshot)
    arbiters = by_role.get(catalog.ARBITER, [])
    arbiter = arbiters[0] if arbiters else None
    return {
        "runtime_dir": runtime_dir,
        "arbiter": None if arbiter is None else {"pid": arbiter["pid"], "started": arbiter["started"],
                                                  "uptime": now - arbiter["started"]},
        "workers": [_worker(s, now) for s in by_role.get(catalog.WORKER, [])],
        "side_processes": _side_processes(arbiter, live, now),
        "federation_links": _links(runtime_dir),
        "counters": _counters(live),
    }


def _values(snapshot: dict[str, Any], name: str) -> list[tuple[list[str], float]]:
    return [(labels, value) for n, labels, value in snapshot["series"] if n == name]


def _total(snapshot: dict[str, Any], name: str) -> float:
    return sum(value for _labels, value in _values(snapshot, name))


def _worker(snapshot: dict[str, Any], now: float) -> dict[str, Any]:
    clients = {labels[0]: int(value) for labels, value in _values(snapshot, "barrel_clients")}
    return {
        "pid": snapshot["pid"], "started": snapshot["started"], "uptime": now - snapshot["started"],
        "clients": clients, "emits": int(_total(snapshot, "barrel_emits_total")),
        "deliveries": int(_total(snapshot, "barrel_deliveries_total")),
        "store_operations": int(_total(snapshot, "barrel_store_operations_total")),
        "handoffs_received": int(_total(snapshot, "barrel_handoffs_received_total")),
    }


def _side_processes(arbiter: dict[str, Any] | None, live: list[dict[str, Any]],
                    now: float) -> list[dict[str, Any]]:
    if arbiter is None:
        return []
    running = {s["pid"] for s in live}
    out = []
    for proc in arbiter.get("info", {}).get("side_processes", []):
        out.append({"name": proc["name"], "pid": proc["pid"], "started": proc["started"],
                    "uptime": now - proc["started"], "restarts": proc["restarts"],
                    "reporting": proc["pid"] in running})
    return out


def _links(runtime_dir: str) -> list[dict[str, Any]]:
    status = endpoints.read_status(runtime_dir) or {}
    links = status.get("links")
    if not isinstance(links, list):
        return []
    return [{"peer": link.get("name"), "direction": "dial" if link.get("dialed") else "listen",
             "up": bool(link.get("up")), "queued": link.get("queued", 0)}
            for link in links if isinstance(link, dict)]


def _counters(live: list[dict[str, Any]]) -> dict[str, float]:
    """Every counter summed over the processes, keyed as Prometheus writes a series."""
    totals: dict[str, float] = {}
    for snapshot in live:
        for name, labels, value in snapshot["series"]:
            metric = _METRICS.get(name)
            if metric is None or metric.kind != "counter":
                continue
            pairs = ",".join(f'{k}="{v}"' for k, v in zip(metric.labels, labels, strict=True))
            key = f"{name}{{{pairs}}}" if pairs else name
            totals[key] = totals.get(key, 0) + value
    return dict(sorted(totals.items()))


_METRICS = {m.name: m for m in catalog.METRICS}


def main_counter(counters: dict[str, float], name: str, labels: str = "") -> float:
    """The sum of the series of ``name`` whose labels include ``labels`` (``result="ok"``)."""
    return sum(value for key, value in counters.items()
               if key.split("{", 1)[0] == name and labels in key)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def _n(value: float) -> str:
    return f"{int(value):,}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = []
    arbiter = report["arbiter"]
    head = f"gunicorn_barrel instance: arbiter {arbiter['pid']}, up {_duration(arbiter['uptime'])}" \
        if arbiter else "gunicorn_barrel instance (no arbiter snapshot yet)"
    lines += [head, f"runtime directory: {report['runtime_dir']}", ""]
    workers = report["workers"]
    ws = sum(w["clients"].get("websocket", 0) for w in workers)
    polling = sum(w["clients"].get("polling", 0) for w in workers)
    lines.append(f"workers: {len(workers)}, clients: {ws + polling} (websocket {ws}, polling {polling})")
    if workers:
        rows = [["pid", "uptime", "websocket", "polling", "emits", "deliveries", "store ops", "handoffs in"]]
        rows += [[str(w["pid"]), _duration(w["uptime"]), _n(w["clients"].get("websocket", 0)),
                  _n(w["clients"].get("polling", 0)), _n(w["emits"]), _n(w["deliveries"]),
                  _n(w["store_operations"]), _n(w["handoffs_received"])] for w in workers]
        lines += _table(rows)
    lines += ["", f"side processes: {len(report['side_processes']) or 'none'}"]
    if report["side_processes"]:
        rows = [["name", "pid", "uptime", "restarts"]]
        rows += [[p["name"], str(p["pid"]), _duration(p["uptime"]), _n(p["restarts"])]
                 for p in report["side_processes"]]
        lines += _table(rows)
    lines += ["", f"federation links: {len(report['federation_links']) or 'none'}"]
    if report["federation_links"]:
        rows = [["peer", "direction", "state", "queued"]]
        rows += [[str(link["peer"]), link["direction"], "up" if link["up"] else "down", _n(link["queued"])]
                 for link in report["federation_links"]]
        lines += _table(rows)
    lines += ["", "counters (all processes):"]
    lines += _table([[title, " / ".join(_n(main_counter(report["counters"], *series)) for series in shown)]
                     for title, shown in MAIN_COUNTERS])
    return "\n".join(lines)


def pid_of(runtime_dir: str) -> int | None:
    """The arbiter pid in a runtime directory's name (``barrel-<pid>-<random>``)."""
    parts = os.path.basename(os.path.normpath(runtime_dir)).split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None
