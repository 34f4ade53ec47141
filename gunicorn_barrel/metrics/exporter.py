"""The exporter side process: the instance's metrics on ``metrics_listen``, and to statsd.

Started by the arbiter's supervisor as ``python -m gunicorn_barrel.metrics.exporter``
when ``metrics_listen`` or gunicorn's ``statsd_host`` is set (restarted if it
dies, gone with the arbiter, as the broadcaster). It serves the Prometheus
exposition of every live snapshot (``exposition``) with prometheus_client's
HTTP server, at any path, in a thread; its main loop sends statsd lines every
``statsd_interval`` (``statsd``), writes its own snapshot, and removes the
snapshots of processes that are gone. A separate process, not a thread of the
arbiter: the arbiter forks workers, and serving HTTP is no business of it.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence

from prometheus_client import start_http_server

from gunicorn_barrel.config import arguments
from gunicorn_barrel.config.settings import EXPORTER
from gunicorn_barrel.config.values import parse_listen_address
from gunicorn_barrel.metrics import catalog, exposition, recorder, snapshots, statsd
from gunicorn_barrel.runtime import endpoints, logs
from gunicorn_barrel.runtime.lifeline import signal_when_parent_dies
from gunicorn_barrel.runtime.stop_signals import StopSignals

log = logging.getLogger("gunicorn_barrel.exporter")

_TICK = 0.25
_TIDY_EVERY = 10.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments.parser("gunicorn_barrel.metrics.exporter", EXPORTER)
    parser.add_argument("--statsd-host", default="", help="host:port, [v6]:port or unix:/path")
    parser.add_argument("--statsd-prefix", default="")
    parser.add_argument("--dogstatsd-tags", default="")
    args = parser.parse_args(argv)
    logs.side_process_logging()  # into gunicorn's error log, through the supervisor
    if not signal_when_parent_dies(args.parent_pid):
        raise SystemExit("exporter: the arbiter is already gone")
    stopping = StopSignals()  # before the HTTP server's thread starts
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if args.metrics_listen:
        host, port = parse_listen_address(args.metrics_listen)
        try:
            start_http_server(port, addr=host, registry=exposition.registry(args.runtime_dir))
        except OSError as exc:
            raise SystemExit(f"exporter: cannot listen on {args.metrics_listen}: {exc}") from None
        log.info("exporter %s: metrics on http://%s/", os.getpid(), args.metrics_listen)
    sender = statsd.Sender(args.statsd_host, args.statsd_prefix, args.dogstatsd_tags) \
        if args.statsd_host else None
    if sender is not None:
        log.info("exporter %s: metrics to statsd at %s every %s s", os.getpid(), args.statsd_host,
                 args.statsd_interval)
    endpoints.mark_ready(args.runtime_dir, os.getpid(), EXPORTER)
    try:
        _loop(args.runtime_dir, args.parent_pid, sender, args.statsd_interval, stopping)
    finally:
        snapshots.remove(args.runtime_dir, catalog.EXPORTER, os.getpid())
        if sender is not None:
            sender.close()
        endpoints.remove_if_orphaned(args.runtime_dir, args.parent_pid)


def _loop(runtime_dir: str, parent_pid: int, sender: statsd.Sender | None, interval: float,
          stopping: StopSignals) -> None:
    writer = snapshots.Writer(runtime_dir, catalog.EXPORTER, recorder.process())
    deltas = statsd.Deltas()
    next_send = next_tidy = time.monotonic()
    while not stopping:
        if os.getppid() != parent_pid:
            log.warning("arbiter %s is gone; exporter exiting", parent_pid)
            return
        now = time.monotonic()
        if writer.due(now):
            writer.write(now)
        if now >= next_tidy or (sender is not None and now >= next_send):
            try:
                live = snapshots.read_live(runtime_dir, tidy=now >= next_tidy)
            except OSError:
                live = []  # the instance is stopping
            if now >= next_tidy:
                next_tidy = now + _TIDY_EVERY
            if sender is not None and now >= next_send:
                next_send = now + interval
                sender.send(deltas.lines(live, time.time()))
        stopping.wait(_TICK)


if __name__ == "__main__":
    main()
