"""Check every library barrel patches or builds on, then apply every patch, in one documented order.

The BarrelWorker calls ``apply_patches`` once, in ``patch()``, after gevent
monkey-patched the process and before the app is loaded (or, with
``--preload``, after it was loaded in the arbiter: every patch below is on a
class or a module-level table, so objects made before it are covered).
Nothing is patched unless every check passed.

Checks (``IncompatibleLibrary`` on a mismatch, naming library, version, change):
  1. versions: gunicorn, gevent, python-socketio, python-engineio in their
     tested range; pyzmq not older than tested (``versions.TESTED``);
  2. shapes: each target below, and what barrel reads or calls of
     python-socketio's manager (``socketio_api``) and gunicorn's parser
     and gevent worker (``gunicorn_api``).

Patches, in this order:
  1. ``engineio.async_drivers.gevent._async['websocket']``: barrel's
     WebSocket (``websocket_driver``), with the deflate threshold;
  2. ``engineio.base_server.BaseServer.generate_id``: session ids that name
     their worker (``engineio_sessions``);
  3. ``engineio.socket.Socket.schedule_ping``: pings on a timer, and gevent's
     ``track_greenlet_tree`` off (``engineio_lean``);
  4. ``engineio.socket.Socket.poll``: batched WebSocket writes
     (``engineio_fast_paths``); ``Socket._websocket_handler`` and
     ``Socket.close``: no writer greenlet per barrel WebSocket, a drainer
     only while packets wait (``engineio_websocket``);
  5. ``engineio.socket.Socket.send``, built from engine.io's own, innermost
     first: the direct WebSocket write (``engineio_fast_paths``), then the
     per-client queue bound (``engineio_backpressure``). The bound is
     outermost so that a packet for a client at its limit or being cut
     never reaches the direct write;
  6. ``engineio.payload.Payload.max_decode_packets``: no cap of 16 packets
     per polling POST, bytes still bounded (``engineio_payload``);
  7. ``socketio.Server._handle_connect``, ``_send_packet`` and
     ``_handle_eio_disconnect``: the auth of each CONNECT packet kept for the
     cluster API, and connection state recovery (``socketio_connect``).

Applying again (tests; a worker after an arbiter that prepared --preload)
rebuilds each wrapper from engine.io's original: wrappers never stack.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from gunicorn_barrel.compat import (
    engineio_backpressure,
    engineio_fast_paths,
    engineio_lean,
    engineio_payload,
    engineio_sessions,
    engineio_websocket,
    gunicorn_api,
    socketio_api,
    socketio_connect,
    versions,
    websocket_driver,
)
from gunicorn_barrel.metrics.recorder import Series

# The shape checks, in the order they run (after the version check).
CHECKS: tuple[Callable[[], None], ...] = (
    gunicorn_api.check,
    websocket_driver.check,
    engineio_sessions.check,
    engineio_lean.check,
    engineio_fast_paths.check,
    engineio_websocket.check,
    engineio_backpressure.check,
    engineio_payload.check,
    socketio_connect.check,  # before socketio_api's: that one makes a Server, which needs these
    socketio_api.check,
)


@dataclasses.dataclass(frozen=True)
class PatchOptions:
    """What the patches need from the worker, passed explicitly."""

    deflate_min_size: int  # see BarrelWebSocket
    client_queue_limit: int  # packets queued for one client before at_queue_limit is asked
    at_queue_limit: Callable[[Any], bool]  # the slow-client policy: True to queue the packet anyway
    new_queue_peak: Callable[[int], None]  # a queue length no queue had before
    new_sid: Callable[[], str]  # an engine.io session id naming this worker
    deliveries: Series = dataclasses.field(default_factory=Series)  # counts messages sent to clients


# (class, attribute) -> engine.io's own value, saved before the first patch.
_originals: dict[tuple[type, str], Any] = {}


def _original(owner: type, name: str) -> Any:
    return _originals.setdefault((owner, name), owner.__dict__[name])


def check_all() -> list[str]:
    """Run every check; raise IncompatibleLibrary on the first mismatch, return warnings otherwise."""
    notes = versions.check_versions()
    for check in CHECKS:
        check()
    return notes


def apply_patches(options: PatchOptions) -> list[str]:
    """Check, then patch this process (see the module docstring); returns warnings to log."""
    from engineio.base_server import BaseServer
    from engineio.socket import Socket
    from socketio import Server

    notes = check_all()  # nothing is patched unless every check passed
    # 1. the WebSocket driver
    websocket_driver.install(options.deflate_min_size)
    # 2. session ids
    _original(BaseServer, "generate_id")
    BaseServer.generate_id = engineio_sessions.tagged_generate_id(options.new_sid)  # type: ignore[method-assign]
    # 3. pings on timers
    _original(Socket, "schedule_ping")
    engineio_lean.install()
    # 4. batched writes
    Socket.poll = engineio_fast_paths.direct_poll(_original(Socket, "poll"))  # type: ignore[method-assign]
    Socket._websocket_handler = engineio_websocket.serving_without_writer(  # type: ignore[method-assign]
        _original(Socket, "_websocket_handler"))
    Socket.close = engineio_websocket.closing_with_drain(_original(Socket, "close"))  # type: ignore[method-assign]
    # 5. direct writes inside, the queue bound outside
    send = engineio_fast_paths.direct_send(_original(Socket, "send"))
    Socket.send = engineio_backpressure.bounded_send(  # type: ignore[method-assign]
        send, options.client_queue_limit, options.at_queue_limit, options.new_queue_peak,
        options.deliveries)
    # 6. any number of packets per polling POST
    engineio_payload.install()
    # 7. CONNECT packets' auth, connection state recovery
    Server._handle_connect = socketio_connect.recording_connect(  # type: ignore[method-assign]
        _original(Server, "_handle_connect"))
    Server._send_packet = socketio_connect.connect_with_pid(  # type: ignore[method-assign]
        _original(Server, "_send_packet"))
    Server._handle_eio_disconnect = socketio_connect.keeping_lost_sessions(  # type: ignore[method-assign]
        _original(Server, "_handle_eio_disconnect"))
    return notes


def prepare_preloaded_app(deflate_min_size: int) -> None:
    """In the arbiter, with --preload: barrel's WebSocket for the engine.io the app already imported.

    No check here and no other patch: the worker checks and applies
    everything after fork, once gevent patched it.
    """
    websocket_driver.install(deflate_min_size)

