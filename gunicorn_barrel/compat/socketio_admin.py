"""What ``gunicorn_barrel.admin`` reads and sets on python-socketio's Admin UI instrumentation.

``socketio.Server.instrument()`` returns an ``InstrumentedServer`` that starts
its ``server_stats`` task at its worker's first engine.io connection and
names its server by the manager's host_id as it was at ``instrument()``
(before fork with ``--preload``). Barrel starts the task in every worker when
its bus connects and names each worker itself, through the attributes
checked here (not public API).
"""
from __future__ import annotations

import socket
from typing import Any

from gunicorn_barrel.compat import shapes

SOCKETIO = "python-socketio"
ATTRIBUTES = ("server_id", "stats_task", "stop_stats_event", "_emit_server_stats", "sio")


def check(instrumented: Any) -> None:
    """The attributes barrel uses on a fresh InstrumentedServer."""
    shapes.has_attributes(SOCKETIO, instrumented, ATTRIBUTES, "socketio.Server.instrument()'s result")
    shapes.accepts(SOCKETIO, type(instrumented), "_emit_server_stats",
                   "socketio.admin.InstrumentedServer._emit_server_stats", ("self",))


def start_stats_here(instrumented: Any, pid: int) -> None:
    """Name this worker in the stats and start sending them (once per worker)."""
    instrumented.server_id = f"{socket.gethostname()}:{pid}"
    if instrumented.stop_stats_event is None:
        instrumented.stop_stats_event = instrumented.sio.eio.create_event()
    if instrumented.stats_task is None:
        instrumented.stats_task = instrumented.sio.start_background_task(instrumented._emit_server_stats)
