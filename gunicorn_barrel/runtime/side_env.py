"""What a side process of your own is told of its gunicorn instance: environment variables.

The supervisor sets them (``environment``); the process reads them (``current``)::

    GUNICORN_BARREL_SIDE_PROCESS    its name in the config
    GUNICORN_BARREL_RUNTIME_DIR     the instance's private runtime directory (the bus's sockets)
    GUNICORN_BARREL_ARBITER_PID     gunicorn's arbiter
    GUNICORN_BARREL_BUS             "zmq", or the Redis bus's URL
    GUNICORN_BARREL_BUS_NAMESPACE   the Redis bus's namespace
    GUNICORN_BARREL_MAX_FRAME_SIZE  the largest bus frame, in bytes

Not ``BARREL_*``: those are settings, and a side process may read its own.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from gunicorn_barrel.runtime import endpoints

PREFIX = "GUNICORN_BARREL_"
NAME = PREFIX + "SIDE_PROCESS"
RUNTIME_DIR = PREFIX + "RUNTIME_DIR"
ARBITER_PID = PREFIX + "ARBITER_PID"
BUS = PREFIX + "BUS"
BUS_NAMESPACE = PREFIX + "BUS_NAMESPACE"
MAX_FRAME_SIZE = PREFIX + "MAX_FRAME_SIZE"


@dataclasses.dataclass(frozen=True)
class SideInstance:
    """A side process's view of its instance."""

    name: str
    runtime_dir: str
    arbiter_pid: int
    bus: str
    bus_namespace: str
    max_frame_size: int


def environment(side: SideInstance) -> dict[str, str]:
    """The variables the supervisor sets for ``side``."""
    return {
        NAME: side.name, RUNTIME_DIR: side.runtime_dir, ARBITER_PID: str(side.arbiter_pid),
        BUS: side.bus, BUS_NAMESPACE: side.bus_namespace, MAX_FRAME_SIZE: str(side.max_frame_size),
    }


def current(environ: Mapping[str, str] | None = None) -> SideInstance | None:
    """This process's instance, or None when it was not started as a barrel side process."""
    environ = os.environ if environ is None else environ
    if RUNTIME_DIR not in environ:
        return None
    try:
        return SideInstance(environ[NAME], environ[RUNTIME_DIR], int(environ[ARBITER_PID]),
                            environ[BUS], environ.get(BUS_NAMESPACE, ""), int(environ[MAX_FRAME_SIZE]))
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"the {PREFIX}* variables are incomplete or invalid ({exc}): "
                           "this process was not started by barrel's supervisor") from None


def mark_ready(side: SideInstance) -> None:
    """Tell the supervisor that ``side`` (this process) is ready (see SideProcess.ready_timeout)."""
    endpoints.mark_ready(side.runtime_dir, os.getpid(), side.name)
