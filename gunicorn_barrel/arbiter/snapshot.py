"""The arbiter's metrics snapshot: its side processes (pid, start time, restarts).

Written when on_starting has started them and whenever one is restarted
(its supervisor's ``on_change``, from the supervising thread), never on a
timer: the arbiter runs gunicorn's loop, not ours. A restart is also when the
dead process's snapshot goes (with any other left by a killed process). Only
the standard library is imported here (the arbiter stays light).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from gunicorn_barrel.arbiter.supervisor import SideProcessSupervisor
from gunicorn_barrel.metrics import catalog, recorder, snapshots

log = logging.getLogger("gunicorn_barrel.arbiter")

_RESTARTS = catalog.metric("barrel_side_process_restarts_total")
_STARTED = catalog.metric("barrel_side_process_start_time_seconds")
_lock = threading.Lock()  # two supervisors may report at once


def write(runtime_dir: str, side_processes: Sequence[SideProcessSupervisor]) -> None:
    """Replace the arbiter's snapshot with the state of ``side_processes``."""
    rec = recorder.process()
    info = []
    with _lock:
        for proc in side_processes:
            rec.series(_RESTARTS, proc.name).value = proc.restarts
            rec.series(_STARTED, proc.name).value = proc.started_at
            info.append({"name": proc.name, "pid": proc.pid, "started": proc.started_at,
                         "restarts": proc.restarts})
        try:
            snapshots.write(runtime_dir, catalog.ARBITER, rec, {"side_processes": info})
            snapshots.read_live(runtime_dir, tidy=True)
        except OSError as exc:  # only observers need it; the instance may be stopping
            log.debug("cannot write the arbiter's metrics snapshot: %s", exc)
