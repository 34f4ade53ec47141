"""gunicorn worker classes for socket.io apps shared across workers.

``BarrelWorker`` is gunicorn's gevent worker plus:
- session routing: each request is looked at (peeked, not read) before it is
  parsed; one for an engine.io session held by another worker is handed to
  that worker with its connection (``routing``, ``handoff``), so long-polling
  and the polling-to-WebSocket upgrade work on any number of workers;
- WebSocket through barrel's lean gunicorn_barrel.ws (never gevent-websocket), with the
  deflate policy from the barrel settings;
- every patch of engine.io's internals applied through ``gunicorn_barrel.compat``
  at start, after the versions and shapes of what it patches are checked: a
  worker refuses to start ("Worker failed to boot") rather than run on an
  untested gunicorn, gevent, python-socketio or python-engineio;
- dying with the arbiter (PR_SET_PDEATHSIG), so no worker lingers after the
  arbiter is SIGKILLed.
"""
from __future__ import annotations

import contextlib
import gc
import sys
from typing import Any

import gevent
from gunicorn.arbiter import Arbiter
from gunicorn.http2 import negotiation
from gunicorn.workers.ggevent import GeventWorker

from gunicorn_barrel.compat import apply as compat
from gunicorn_barrel.compat import engineio_sessions
from gunicorn_barrel.compat.versions import IncompatibleLibrary
from gunicorn_barrel.config import instance
from gunicorn_barrel.config.settings import BarrelSettings
from gunicorn_barrel.metrics import catalog, recorder
from gunicorn_barrel.runtime import endpoints, sids
from gunicorn_barrel.runtime.lifeline import signal_when_parent_dies
from gunicorn_barrel.worker import backpressure, routing
from gunicorn_barrel.worker.context import WorkerContext
from gunicorn_barrel.worker.handoff import HandoffReceiver, HandoffSender
from gunicorn_barrel.worker.metrics import WorkerMetrics, metrics_endpoint
from gunicorn_barrel.worker.requests import engineio_requests
from gunicorn_barrel.worker.serve import Connection, serve_one_request
from gunicorn_barrel.ws import connection as ws_connection

_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 12\r\n\r\nworker full\n")


class BarrelWorker(GeventWorker):
    """The gevent worker for socket.io apps served by several gunicorn workers."""

    handoff_in: HandoffReceiver | None = None
    handoff_out: HandoffSender | None = None
    # Connections being served by a greenlet now, and connections refused for lack of room.
    _serving = 0
    _refused_full = 0
    context: WorkerContext | None = None
    metrics: WorkerMetrics | None = None

    @classmethod
    def setup(cls) -> None:
        # Runs in the arbiter when gunicorn loads the worker class. Only a
        # --preload app has imported engineio here; importing it ourselves
        # would import ssl (through requests) before gevent patches it.
        if "engineio" in sys.modules:
            settings = instance.settings()
            deflate_min_size = settings.websocket_deflate_min_size if settings is not None else 1024
            compat.prepare_preloaded_app(deflate_min_size)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if instance.settings() is None:
            raise RuntimeError(
                "BarrelWorker needs the barrel hooks: add "
                "`from gunicorn_barrel import hooks; hooks.install(globals())` "
                "to your gunicorn config (see example_confs/barrel_conf.py)"
            )
        if cfg.is_ssl:
            log.warning("barrel: with gunicorn's own TLS, long-polling is not routed across "
                        "workers; terminate TLS in front of gunicorn or use WebSocket-only clients")

    def start_barrel(self, settings: BarrelSettings, runtime_dir: str) -> None:
        """Make this worker's context: bus and store clients (the post_worker_init hook calls this)."""
        self.context = WorkerContext.start(settings, runtime_dir)
        self.metrics = WorkerMetrics(self.context, lambda: (self.handoff_out, self.handoff_in))
        gevent.spawn(self._mark_ready_when_live, self.context)

    def _mark_ready_when_live(self, context: WorkerContext) -> None:
        # Runs once the worker's loop runs: ready means serving with a live bus.
        while self.alive and self.context is context:
            if context.bus.wait_live(timeout=1.0):
                endpoints.mark_worker_ready(context.runtime_dir, self.pid)
                return

    def stop_barrel(self) -> None:
        """Log its counters and close it (the worker_exit hook calls this)."""
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.context is not None:
            endpoints.unmark_worker(self.context.runtime_dir, self.pid)
            self.context.close()
            endpoints.remove_if_orphaned(self.context.runtime_dir, self.ppid)
            self.context = None

    def init_process(self) -> None:
        if not signal_when_parent_dies(self.ppid):
            raise SystemExit(0)  # the arbiter died while this worker was forking
        super().init_process()

    def patch(self) -> None:
        super().patch()
        # After gevent patched ssl and sockets: the checks import engine.io.
        settings = instance.settings()
        if settings is None:  # check_config refused this in the arbiter already
            raise RuntimeError("BarrelWorker needs the barrel hooks in the gunicorn config")
        policy = backpressure.SlowClientPolicy(settings.client_queue_limit, settings.slow_client_policy)
        try:
            notes = compat.apply_patches(compat.PatchOptions(
                deflate_min_size=settings.websocket_deflate_min_size,
                client_queue_limit=policy.limit,
                at_queue_limit=policy.at_limit,
                new_queue_peak=policy.new_peak,
                new_sid=sids.new_sid,
                deliveries=recorder.process().series(catalog.metric("barrel_deliveries_total")),
            ))
        except IncompatibleLibrary as exc:
            self.log.error("barrel: refusing to start: %s", exc)
            # The arbiter stops with "Worker failed to boot" rather than
            # restarting workers that would refuse again.
            raise SystemExit(Arbiter.WORKER_BOOT_ERROR) from exc
        for note in notes:
            self.log.warning("barrel: %s", note)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = instance.settings()
        allow = settings.websocket_deflate if settings is not None else False
        app = engineio_requests(self.wsgi, allow,  # type: ignore[has-type]
                                engineio_sessions.max_http_buffer_size)
        runtime_dir = instance.runtime_dir()
        if settings is not None and settings.metrics_path and runtime_dir is not None:
            app = metrics_endpoint(app, settings.metrics_path, runtime_dir)
        self.wsgi = app
        # Everything loaded so far (modules, the app) lives as long as the
        # worker: out of the collector's sight, a full collection no longer
        # walks it (such pauses showed as p99 spikes of broadcasts).
        gc.collect()
        gc.freeze()

    def run(self) -> None:
        # Listener names are read now: a worker that is stopping closes its
        # listeners, but still serves connections handed to it.
        self._listener_names = [s.getsockname() for s in self.sockets]
        runtime_dir = instance.runtime_dir()
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

    def timeout_ctx(self) -> Any:
        # gunicorn reads without a timeout when keepalive is 0 (one request
        # per connection); gevent.Timeout(0) would fire before any byte came.
        if not self.cfg.keepalive:
            return contextlib.nullcontext()
        return super().timeout_ctx()

    def _adopt(self, client: Any, addr: Any, listener_index: int, conn: Connection) -> None:
        """Serve a connection another worker handed over, as if accepted here."""
        if not 0 <= listener_index < len(self._listener_names):
            client.close()
            return
        gevent.spawn(self._serve_adopted, listener_index, client, addr, conn)

    def _serve_adopted(self, listener_index: int, client: Any, addr: Any, conn: Connection) -> None:
        if not self._room_for(client):
            return
        self._serving += 1
        try:
            self._handle_routed(listener_index, client, addr, conn)
        finally:
            self._serving -= 1

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.setblocking(1)
        if not self._room_for(client):
            return
        self._serving += 1
        try:
            if self.handoff_out is None or negotiation.prior_knowledge_allowed(self.cfg, addr):
                return super().handle(listener, client, addr)
            self._handle_routed(self.sockets.index(listener), client, addr, Connection())
        finally:
            self._serving -= 1

    def _room_for(self, client: Any) -> bool:
        """Whether the worker may serve one more connection; if not, answer 503 and close it.

        gunicorn's pool bounds the connections being served to
        worker_connections; WebSockets that read without a greenlet hold no
        slot of it, so the sum is bounded here (the open-files limit is sized
        for worker_connections, see runtime.open_files).
        """
        if self._serving + ws_connection.detached.value < self.worker_connections:
            return True
        self._refused_full += 1
        if self._refused_full in (1, 10, 100) or self._refused_full % 1000 == 0:
            self.log.warning("barrel: worker %s is full (worker_connections %s: %s served, %s "
                             "WebSockets open): connection refused with 503 (%s so far)", self.pid,
                             self.worker_connections, self._serving, ws_connection.detached.value,
                             self._refused_full)
        try:
            client.sendall(_FULL)
        except OSError:
            pass
        client.close()
        return False

    def _handle_routed(self, listener_index: int, client: Any, addr: Any, conn: Connection) -> None:
        """Serve requests of a connection one at a time, handing it on when one belongs elsewhere."""
        assert self.handoff_out is not None
        listener_name = self._listener_names[listener_index]
        proxy_protocol = self.cfg.proxy_protocol not in ("off", False, None)
        try:
            # No `while self.alive`: a request that reached us is served even
            # while the worker is stopping (gunicorn then answers with
            # "Connection: close"), as gunicorn's own loop does.
            while True:
                line = None
                with self.timeout_ctx():
                    line = routing.peek_request_line(client, proxy_protocol and not conn.served)
                if line is None:
                    return
                owner = routing.owner_of_request(line)
                if owner is not None and owner != self.pid:
                    if self.handoff_out.send(owner, client, addr, listener_index, conn):
                        return
                    # The owner is gone: engine.io here answers "unknown session".
                if not serve_one_request(self, listener_name, client, addr, conn):
                    return
        except OSError as exc:
            self.log.debug("connection error: %s", exc)
        finally:
            client.close()
