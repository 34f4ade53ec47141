"""Every metric a barrel process reports, declared once: name, type, unit, help, labels, who reports it.

The one contract between the processes that record (``recorder``), the
snapshot files they write, the Prometheus exposition (``exposition``), statsd
(``statsd``), the status command and the README's list
(``python -m gunicorn_barrel.metrics.catalog`` prints it). Names follow the
Prometheus conventions: a ``barrel_`` prefix, the unit as a suffix
(``_seconds``, ``_bytes``), ``_total`` on counters, histograms for latencies.
Every series also carries the labels ``role`` (which kind of process) and
``pid`` (which process): a worker is ``role="worker",pid="..."``.

``source`` names the key of a process's existing counters dict that holds a
metric's value (the bus client's ``counters``, the slow-client policy's, the
broadcaster's...), so those counters are reported without a second count.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
# How statsd gets a gauge of several processes: their sum, their maximum, or not at all.
Aggregate = Literal["sum", "max", "none"]

ARBITER = "arbiter"
WORKER = "worker"
BROADCASTER = "broadcaster"
STORE = "store"
EXPORTER = "exporter"
ROLES = (ARBITER, WORKER, BROADCASTER, STORE, EXPORTER)

COMMON_LABELS = ("role", "pid")

# Latencies of operations that take from tens of microseconds to seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric: its Prometheus name, type, help, labels beyond role and pid, and reporters."""

    name: str
    kind: Kind
    help: str
    roles: tuple[str, ...]
    labels: tuple[str, ...] = ()
    source: str | None = None  # the key of the reporter's counters dict, if it already counts it
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, +Inf implied
    statsd: Aggregate = "sum"

    def __post_init__(self) -> None:
        assert self.name.startswith("barrel_"), self.name
        assert (self.kind == "counter") == self.name.endswith("_total"), self.name
        assert (self.kind == "histogram") == bool(self.buckets), self.name
        assert not set(self.labels) & set(COMMON_LABELS), self.name


def _bus(key: str, help_text: str, redis_only: bool = False) -> Metric:
    suffix = " (Redis bus only)" if redis_only else ""
    source = f"bus_{key}" if key in ("reconnects", "publish_failures") else key
    return Metric(f"barrel_bus_{key}_total", "counter", help_text + suffix, (WORKER, STORE), source=source)


def _federation(key: str, help_text: str) -> Metric:
    return Metric(f"barrel_{key}_total", "counter", help_text, (BROADCASTER,), source=key)


METRICS: tuple[Metric, ...] = (
    # Every process (from /proc at scrape time, or the process's own record).
    Metric("barrel_process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch.", ROLES),
    Metric("barrel_process_resident_memory_bytes", "gauge", "Resident memory of the process.", ROLES),
    Metric("barrel_process_cpu_seconds_total", "counter",
           "User and system CPU time the process has used.", ROLES),
    # The arbiter: its side processes.
    Metric("barrel_side_process_restarts_total", "counter",
           "Times the arbiter restarted a side process after it died.", (ARBITER,), ("process",)),
    Metric("barrel_side_process_start_time_seconds", "gauge",
           "When the running instance of a side process was started, since the Unix epoch.",
           (ARBITER,), ("process",), statsd="none"),
    # Workers: clients and socket.io traffic.
    Metric("barrel_clients", "gauge",
           "engine.io sessions held by the worker, by transport (polling, or upgraded to websocket).",
           (WORKER,), ("transport",)),
    Metric("barrel_socketio_connects_total", "counter",
           "socket.io connections opened, one per client and namespace (one the app's connect "
           "handler refuses counts too, and its end).", (WORKER,)),
    Metric("barrel_socketio_disconnects_total", "counter",
           "socket.io connections ended, by the client, the server or a timeout.", (WORKER,)),
    Metric("barrel_emits_total", "counter",
           "emit() calls made in the worker through BarrelManager (each reaches every worker once).",
           (WORKER,)),
    Metric("barrel_deliveries_total", "counter",
           "Messages handed to the worker's clients (engine.io message packets: socket.io events, "
           "acks, connects).", (WORKER,)),
    # The bus, as each client sees it (workers, and the store's own client).
    _bus("frames_pushed", "Bus frames published by the process."),
    _bus("frames_delivered", "Bus frames handed to the process's handlers."),
    _bus("frames_resent", "Bus frames sent again (a new broadcaster, a lost frame, Redis back)."),
    _bus("frames_lost", "Bus frames given up after gap_timeout (counted in the gaps)."),
    _bus("gaps", "Holes in a sender's frames that were not filled within gap_timeout."),
    _bus("duplicates_dropped", "Bus frames received twice and dropped."),
    _bus("frames_unrecoverable", "Frames dropped unsent or unacknowledged past max_unacked."),
    _bus("frames_refused", "Bus frames refused as malformed."),
    _bus("broadcaster_restarts_seen", "New broadcasters (epochs) this client reconnected to."),
    _bus("push_queue_full", "Pushes that found the socket's queue full (resent later)."),
    _bus("frames_published", "Frames Redis confirmed published (ticks included).", redis_only=True),
    _bus("reconnects", "Subscriptions to Redis that came back.", redis_only=True),
    _bus("publish_failures", "PUBLISH calls to Redis that failed.", redis_only=True),
    _bus("frames_replayed", "Frames published again on another worker's request.", redis_only=True),
    _bus("nacks_sent", "Requests for missing frames sent.", redis_only=True),
    _bus("replay_misses", "Frames asked for that had left the sender's window.", redis_only=True),
    Metric("barrel_bus_unacked_frames", "gauge",
           "Frames published and not yet acknowledged by the broadcaster (kept for resending).",
           (WORKER, STORE)),
    # Slow clients.
    Metric("barrel_slow_clients_cut_total", "counter",
           "Clients disconnected at client_queue_limit (slow_client_policy = 'disconnect').",
           (WORKER,), source="clients_dropped_slow"),
    Metric("barrel_slow_client_packets_dropped_total", "counter",
           "Packets dropped at client_queue_limit (slow_client_policy = 'drop_oldest').",
           (WORKER,), source="packets_dropped_slow"),
    Metric("barrel_client_queue_peak_packets", "gauge",
           "The longest queue of packets any client of the worker has had.", (WORKER,),
           source="client_queue_peak", statsd="max"),
    # Session routing: polling requests handed to the worker that holds the session.
    Metric("barrel_handoffs_total", "counter",
           "Connections this worker handed to the worker holding their session "
           "(result: sent, or failed when that worker was gone).", (WORKER,), ("result",)),
    Metric("barrel_handoffs_received_total", "counter",
           "Connections other workers handed to this one.", (WORKER,)),
    Metric("barrel_handoff_latency_seconds", "histogram",
           "From the sending worker's decision to hand a connection over to the receiving worker "
           "taking it.", (WORKER,), buckets=LATENCY_BUCKETS),
    # The store, as workers call it.
    Metric("barrel_store_operations_total", "counter",
           "Store calls made by the worker, by operation and result (ok, error, timeout).",
           (WORKER,), ("op", "result")),
    Metric("barrel_store_operation_duration_seconds", "histogram",
           "Duration of the worker's store calls, answer included, by operation.",
           (WORKER,), ("op",), buckets=LATENCY_BUCKETS),
    Metric("barrel_store_requests_resent_total", "counter",
           "Store calls sent again to a restarted store process (embedded store).",
           (WORKER,), source="store_requests_resent"),
    Metric("barrel_store_watch_reconnects_total", "counter",
           "Redis store change subscriptions that came back (Redis store).",
           (WORKER,), source="store_watch_reconnects"),
    Metric("barrel_store_watch_gaps_total", "counter",
           "Redis store change events missed while resubscribing (Redis store).",
           (WORKER,), source="store_watch_gaps"),
    # The embedded store's process.
    Metric("barrel_store_server_requests_total", "counter",
           "Requests the embedded store process answered, by operation.", (STORE,), ("op",)),
    Metric("barrel_store_server_batch_duration_seconds", "histogram",
           "Duration of one batch of requests in the embedded store: one SQLite transaction, "
           "commit included.", (STORE,), buckets=LATENCY_BUCKETS),
    # The broadcaster.
    Metric("barrel_broadcaster_frames_published_total", "counter",
           "Frames the broadcaster published to the workers.", (BROADCASTER,), source="frames_published"),
    Metric("barrel_broadcaster_frames_refused_total", "counter",
           "Frames pushed to the broadcaster and refused as malformed.", (BROADCASTER,),
           source="frames_refused"),
    Metric("barrel_broadcaster_subscribers", "gauge",
           "Bus clients subscribed to the broadcaster: the workers, and the embedded store.",
           (BROADCASTER,)),
    # Federation links, per peer.
    Metric("barrel_federation_link_up", "gauge",
           "1 while the link to a peer is up, else 0 (direction: dial or listen).",
           (BROADCASTER,), ("peer", "direction")),
    Metric("barrel_federation_link_queued_frames", "gauge",
           "Frames kept for a peer until it acknowledges them.", (BROADCASTER,), ("peer", "direction")),
    _federation("federation_frames_in", "Frames received from peers and published here."),
    _federation("federation_frames_out", "Frames sent to peers."),
    _federation("federation_duplicates_dropped", "Frames from peers seen before and dropped."),
    _federation("federation_frames_resent", "Frames sent to a peer again."),
    _federation("federation_frames_dropped", "Frames dropped from a peer's full queue."),
    _federation("federation_peer_restarts_seen", "Peers seen restarting."),
    _federation("federation_peers_refused", "Connections refused: key not admitted."),
    _federation("federation_handshakes_failed", "Dialed peers whose handshake failed."),
    _federation("federation_frames_refused", "Frames from peers refused as malformed."),
    _federation("federation_messages_refused", "Link messages refused as malformed."),
    _federation("federation_send_blocked", "Sends to a peer that found its queue full (resent later)."),
    _federation("federation_data_before_hello", "Frames from a peer before its hello (dropped)."),
    _federation("federation_start_failed", "Attempts to start the links that failed (a port taken)."),
)

_BY_NAME = {metric.name: metric for metric in METRICS}


def metric(name: str) -> Metric:
    """The declaration of metric ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


def of_role(role: str) -> tuple[Metric, ...]:
    """The metrics processes of ``role`` report."""
    return tuple(m for m in METRICS if role in m.roles)


def reference_table() -> str:
    """The metrics reference as a reStructuredText list (kept in README.rst)."""
    lines = []
    for m in METRICS:
        labels = f"{{{','.join(m.labels)}}}" if m.labels else ""
        lines.append(f"``{m.name}{labels}`` ({m.kind}; {', '.join(m.roles)})")
        lines.append(f"    {m.help}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(reference_table())
