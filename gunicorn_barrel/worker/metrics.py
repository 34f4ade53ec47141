"""The worker's metrics: its counts gathered, its snapshot written every second, ``metrics_path`` answered.

What the worker counts elsewhere (the bus client's and the store client's
counters, the slow-client policy's, the handoffs, engine.io's sessions) is
copied into this process's recorder when a snapshot is taken; the emits,
connects, deliveries, store calls and handoff latencies are counted where
they happen (``sio.manager``, ``compat``, ``store``, ``handoff``).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent

from gunicorn_barrel.compat import engineio_sessions
from gunicorn_barrel.metrics import catalog, recorder, snapshots
from gunicorn_barrel.worker.context import WorkerContext
from gunicorn_barrel.worker.handoff import HandoffReceiver, HandoffSender

log = logging.getLogger("gunicorn_barrel.worker")

_CLIENTS = catalog.metric("barrel_clients")
_HANDOFFS = catalog.metric("barrel_handoffs_total")
_RECEIVED = catalog.metric("barrel_handoffs_received_total")
_UNACKED = catalog.metric("barrel_bus_unacked_frames")

Handoffs = Callable[[], tuple[HandoffSender | None, HandoffReceiver | None]]


class WorkerMetrics:
    """Gathers this worker's counts and writes its snapshot every second, until closed."""

    def __init__(self, context: WorkerContext, handoffs: Handoffs) -> None:
        self.context = context
        self._handoffs = handoffs
        self.recorder = recorder.process()
        self.writer = snapshots.Writer(context.runtime_dir, catalog.WORKER, self.recorder)
        self.recorder.add_source(self._gather)
        self._greenlet = gevent.spawn(self._run)

    def _gather(self, rec: recorder.Recorder) -> None:
        rec.copy_counters(self.context.counters(), catalog.WORKER)
        for transport, count in engineio_sessions.sessions_by_transport().items():
            rec.series(_CLIENTS, transport).value = count
        sender, receiver = self._handoffs()
        if sender is not None:
            rec.series(_HANDOFFS, "sent").value = sender.sent
            rec.series(_HANDOFFS, "failed").value = sender.failed
        if receiver is not None:
            rec.series(_RECEIVED).value = receiver.received
        outbox = getattr(self.context.bus, "outbox", None)  # the zmq bus keeps one
        if outbox is not None:
            rec.series(_UNACKED).value = outbox.unacked_count()

    def _run(self) -> None:
        try:
            snapshots.read_live(self.context.runtime_dir, tidy=True)  # what killed workers left
        except OSError:
            pass
        while True:
            self.writer.write(time.monotonic())
            gevent.sleep(snapshots.INTERVAL)

    def close(self) -> None:
        """Stop writing and remove the snapshot (the worker is exiting)."""
        self._greenlet.kill(block=True, timeout=1.0)
        self.recorder.remove_source(self._gather)
        self.writer.remove()


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def metrics_endpoint(app: WSGIApp, path: str, runtime_dir: str) -> WSGIApp:
    """Answer GET/HEAD ``path`` with the instance's Prometheus metrics; pass everything else to ``app``."""
    from gunicorn_barrel.metrics import exposition  # prometheus_client: only with metrics_path

    def barrel_metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != path:
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 METHOD NOT ALLOWED", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"GET only\n"]
        body, content_type = exposition.render(runtime_dir)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body] if environ.get("REQUEST_METHOD") == "GET" else []

    log.debug("barrel metrics on %s (worker %s)", path, os.getpid())
    return barrel_metrics
