"""The private parts of python-socketio that ``gunicorn_barrel.sio.manager`` builds on (checked, not patched).

BarrelManager is a ``PubSubManager`` subclass: it fills the two documented
holes (``_publish``, ``_listen``), but also skips ``PubSubManager.initialize``
(its listener thread), hands received messages to the ``_handle_*`` methods,
makes ack ids with ``_generate_ack_id``, writes pre-encoded packets with the
server's ``_send_eio_packet`` and reads ``rooms``; it counts connections where
a sid enters and leaves the room ``None`` (``basic_enter_room``,
``basic_disconnect``) for its metrics. None of these is public
API: a release that renames one would break cross-worker delivery quietly.
"""
from __future__ import annotations

import logging

from gunicorn_barrel.compat import shapes

SOCKETIO = "python-socketio"

# method name -> the parameters BarrelManager calls it with
MANAGER_METHODS: dict[str, tuple[str, ...]] = {
    "__init__": ("self", "channel", "write_only", "logger"),
    "initialize": ("self",),
    "emit": ("self", "event", "data", "namespace", "room", "skip_sid", "callback", "to"),
    "get_participants": ("self", "namespace", "room"),
    "basic_enter_room": ("self", "sid", "namespace", "room", "eio_sid"),
    "basic_disconnect": ("self", "sid", "namespace"),
    # the cluster API's answers (sio.local_answers) and the CONNECT patch
    "basic_leave_room": ("self", "sid", "namespace", "room"),
    "get_rooms": ("self", "sid", "namespace"),
    "is_connected": ("self", "sid", "namespace"),
    "sid_from_eio_sid": ("self", "eio_sid", "namespace"),
    "eio_sid_from_sid": ("self", "sid", "namespace"),
    "get_namespaces": ("self",),
    "_generate_ack_id": ("self", "sid", "callback"),
    "_get_logger": ("self",),
    "_handle_callback": ("self", "message"),
    "_return_callback": ("self", "host_id", "sid", "namespace", "callback_id"),
    "_handle_disconnect": ("self", "message"),
    "_handle_enter_room": ("self", "message"),
    "_handle_leave_room": ("self", "message"),
    "_handle_close_room": ("self", "message"),
}
MANAGER_ATTRIBUTES = ("rooms", "server", "host_id", "write_only", "channel")
# what the cluster API's answers call on the server (and on its engine.io server)
SERVER_METHODS: dict[str, tuple[str, ...]] = {
    "get_session": ("self", "sid", "namespace"),
    "disconnect": ("self", "sid", "namespace", "ignore_queue"),
    "save_session": ("self", "sid", "session", "namespace"),
}


def check() -> None:
    """PubSubManager's methods and attributes, the server's packet writer, the packet constants."""
    import socketio
    from socketio import base_manager, packet

    for name, params in MANAGER_METHODS.items():
        shapes.accepts(SOCKETIO, socketio.PubSubManager, name, f"socketio.PubSubManager.{name}", params)
    shapes.attribute(SOCKETIO, base_manager.BaseManager, "initialize",
                     "socketio.base_manager.BaseManager.initialize")
    shapes.has_attributes(SOCKETIO, socketio.PubSubManager(channel="barrel-compat-check"), MANAGER_ATTRIBUTES,
                          "a new socketio.PubSubManager")
    shapes.accepts(SOCKETIO, socketio.Server, "_send_eio_packet", "socketio.Server._send_eio_packet",
                   ("self", "eio_sid", "eio_pkt"))
    # Explicit loggers: the default ones would be configured as a side effect.
    quiet = logging.getLogger("gunicorn_barrel.compat")
    server = socketio.Server(async_mode="gevent", logger=quiet, engineio_logger=quiet, monitor_clients=False)
    shapes.has_attributes(SOCKETIO, server, ("packet_class", "eio", "manager", "environ"),
                          "a new socketio.Server")
    for name, params in SERVER_METHODS.items():
        shapes.accepts(SOCKETIO, socketio.Server, name, f"socketio.Server.{name}", params)
    shapes.attribute(SOCKETIO, packet, "EVENT", "socketio.packet.EVENT")
