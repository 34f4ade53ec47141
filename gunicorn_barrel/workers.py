"""gunicorn worker classes for socket.io apps shared across workers.

``BarrelWorker`` is gunicorn's gevent worker plus three things: WebSocket
through simple-websocket (never gevent-websocket), the deflate policy from the
barrel settings, and dying with the arbiter (PR_SET_PDEATHSIG) so that no
worker lingers after the arbiter is SIGKILLed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from gunicorn_barrel import hooks
from gunicorn_barrel.websocket import deflate_policy, use_simple_websocket

_PR_SET_PDEATHSIG = 1


class BarrelWorker(GeventWorker):
    """The gevent worker for socket.io apps served by several gunicorn workers."""

    @classmethod
    def setup(cls) -> None:
        # Runs in the arbiter when gunicorn loads the worker class. Only a
        # --preload app has imported engineio here; importing it ourselves
        # would import ssl (through requests) before gevent patches it.
        if "engineio" in sys.modules:
            use_simple_websocket()

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if hooks.active_settings() is None:
            raise RuntimeError(
                "BarrelWorker needs the barrel hooks: add "
                "`from gunicorn_barrel import hooks; hooks.install(globals())` "
                "to your gunicorn config (see example_confs/barrel_conf.py)"
            )

    def init_process(self) -> None:
        _terminate_with_parent(self.ppid)
        super().init_process()

    def patch(self) -> None:
        super().patch()
        use_simple_websocket()  # after gevent has patched ssl and sockets

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = hooks.active_settings()
        allow = settings.websocket_deflate if settings is not None else False
        self.wsgi = deflate_policy(self.wsgi, allow)


def _terminate_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: gunicorn's own ppid check remains
        return
    if os.getppid() != parent_pid:
        raise SystemExit(0)  # the arbiter died while this worker was forking
