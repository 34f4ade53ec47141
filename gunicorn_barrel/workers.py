"""gunicorn worker classes for socket.io apps shared across workers.

``BarrelWorker`` is gunicorn's gevent worker plus:
- session routing: each request is looked at (peeked, not read) before it is
  parsed; one for an engine.io session held by another worker is handed to
  that worker with its connection (``routing``, ``handoff``), so long-polling
  and the polling-to-WebSocket upgrade work on any number of workers;
- WebSocket through barrel's lean gunicorn_barrel.ws (never gevent-websocket), with the
  deflate policy from the barrel settings;
- dying with the arbiter (PR_SET_PDEATHSIG), so no worker lingers after the
  arbiter is SIGKILLed.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

import gevent
from gunicorn.http2 import negotiation
from gunicorn.workers.ggevent import GeventWorker

from gunicorn_barrel import backpressure, engineio_lean, hooks, routing
from gunicorn_barrel.engineio_requests import engineio_requests
from gunicorn_barrel.handoff import HandoffReceiver, HandoffSender
from gunicorn_barrel.lifeline import signal_when_parent_dies
from gunicorn_barrel.serve import serve_one_request
from gunicorn_barrel.websocket import use_barrel_websocket


class BarrelWorker(GeventWorker):
    """The gevent worker for socket.io apps served by several gunicorn workers."""

    handoff_in: HandoffReceiver | None = None
    handoff_out: HandoffSender | None = None

    @classmethod
    def setup(cls) -> None:
        # Runs in the arbiter when gunicorn loads the worker class. Only a
        # --preload app has imported engineio here; importing it ourselves
        # would import ssl (through requests) before gevent patches it.
        if "engineio" in sys.modules:
            use_barrel_websocket()

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if hooks.active_settings() is None:
            raise RuntimeError(
                "BarrelWorker needs the barrel hooks: add "
                "`from gunicorn_barrel import hooks; hooks.install(globals())` "
                "to your gunicorn config (see example_confs/barrel_conf.py)"
            )
        if cfg.is_ssl:
            log.warning("barrel: with gunicorn's own TLS, long-polling is not routed across "
                        "workers; terminate TLS in front of gunicorn or use WebSocket-only clients")

    def init_process(self) -> None:
        if not signal_when_parent_dies(self.ppid):
            raise SystemExit(0)  # the arbiter died while this worker was forking
        super().init_process()

    def patch(self) -> None:
        super().patch()
        settings = hooks.active_settings()
        # after gevent has patched ssl and sockets
        use_barrel_websocket(settings.websocket_deflate_min_size if settings is not None else 1024)
        routing.tag_engineio_sessions()
        engineio_lean.install()
        if settings is not None:
            backpressure.install(settings.client_queue_limit, settings.slow_client_policy)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = hooks.active_settings()
        allow = settings.websocket_deflate if settings is not None else False
        app = self.wsgi  # type: ignore[has-type]
        self.wsgi = engineio_requests(app, allow, routing.max_http_buffer_size)
        # Everything loaded so far (modules, the app) lives as long as the
        # worker: out of the collector's sight, a full collection no longer
        # walks it (such pauses showed as p99 spikes of broadcasts).
        gc.collect()
        gc.freeze()

    def run(self) -> None:
        # Listener names are read now: a worker that is stopping closes its
        # listeners, but still serves connections handed to it.
        self._listener_names = [s.getsockname() for s in self.sockets]
        runtime_dir = hooks.runtime_dir()
        if runtime_dir is not None and not self.cfg.is_ssl:
            self.handoff_out = HandoffSender(runtime_dir)
            self.handoff_in = HandoffReceiver(runtime_dir, self._adopt)
        try:
            super().run()
        finally:
            if self.handoff_in is not None:
                self.handoff_in.close()
            if self.handoff_out is not None:
                self.handoff_out.close()

    def _adopt(self, client: Any, addr: Any, listener_index: int) -> None:
        """Serve a connection another worker handed over, as if accepted here."""
        if not 0 <= listener_index < len(self._listener_names):
            client.close()
            return
        gevent.spawn(self._handle_routed, listener_index, client, addr)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.setblocking(1)
        if self.handoff_out is None or negotiation.prior_knowledge_allowed(self.cfg, addr):
            return super().handle(listener, client, addr)
        self._handle_routed(self.sockets.index(listener), client, addr)

    def _handle_routed(self, listener_index: int, client: Any, addr: Any) -> None:
        """Serve requests of a connection one at a time, handing it on when one belongs elsewhere."""
        assert self.handoff_out is not None
        listener_name = self._listener_names[listener_index]
        try:
            # No `while self.alive`: a request that reached us is served even
            # while the worker is stopping (gunicorn then answers with
            # "Connection: close"), as gunicorn's own loop does.
            while True:
                line = None
                with self.timeout_ctx():
                    line = routing.peek_request_line(client)
                if line is None:
                    return
                owner = routing.owner_of_request(line)
                if owner is not None and owner != self.pid:
                    if self.handoff_out.send(owner, client, addr, listener_index):
                        return
                    # The owner is gone: engine.io here answers "unknown session".
                if not serve_one_request(self, listener_name, client, addr):
                    return
        except OSError as exc:
            self.log.debug("connection error: %s", exc)
        finally:
            client.close()
