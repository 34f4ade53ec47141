"""BarrelManager: a python-socketio client manager over the barrel bus.

The data path: ``sio.emit()`` -> BarrelManager.emit -> BusClient.publish ->
broadcaster -> every worker's BusClient listener -> BarrelManager._on_frame ->
python-socketio delivers to the clients that worker holds.

python-socketio's PubSubManager already knows how to turn emits, room changes,
disconnects and acks into messages and back; this class gives it a transport,
keeps binary payloads binary on the wire, and gives every worker its own
host_id even when the app was created before fork (``--preload``).
"""
from __future__ import annotations

import logging
import os
import uuid
import weakref
from typing import Any

from socketio import PubSubManager

from gunicorn_barrel.bus import client as bus_client
from gunicorn_barrel.bus.wire import Frame

_LOCAL_HANDLERS = {
    "emit": "_handle_emit",
    "disconnect": "_handle_disconnect",
    "enter_room": "_handle_enter_room",
    "leave_room": "_handle_leave_room",
    "close_room": "_handle_close_room",
}

_instances: weakref.WeakSet[BarrelManager] = weakref.WeakSet()


def _new_host_ids_after_fork() -> None:
    # An id inherited across fork would make workers drop each other's
    # messages as their own (seen with --preload: 7 of 16 clients reached).
    for manager in list(_instances):
        manager.host_id = uuid.uuid4().hex
        manager._attached_pid = None


os.register_at_fork(after_in_child=_new_host_ids_after_fork)


def attach_all() -> None:
    """Subscribe every manager of this worker to the bus now, not at its first client.

    zeromq subscriptions take a moment to reach the broadcaster; doing it at
    worker start means no emit from another worker can pass by unheard.
    """
    for manager in list(_instances):
        if not manager.write_only:
            manager._attach()


class BarrelManager(PubSubManager):  # type: ignore[misc]
    """Client manager that shares emits, rooms, disconnects and acks across workers.

    Use it as ``socketio.Server(async_mode="gevent", client_manager=BarrelManager())``
    in an app served by gunicorn with the barrel hooks installed.
    """

    name = "barrel"

    def __init__(
        self,
        channel: str = "socketio",
        write_only: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only, logger=logger)
        self.bus_channel = "sio:" + channel
        self._attached_pid: int | None = None
        _instances.add(self)

    def initialize(self) -> None:
        # Skip PubSubManager.initialize: it starts a listener thread per
        # manager, while the worker's bus client already has one.
        super(PubSubManager, self).initialize()
        self._attach()
        self._get_logger().info("barrel manager attached to the bus (host_id %s)", self.host_id)

    def _attach(self) -> bus_client.Bus:
        bus = bus_client.current()
        if self._attached_pid != os.getpid() and not self.write_only:
            bus.subscribe(self.bus_channel, self._on_frame)
            self._attached_pid = os.getpid()
        return bus

    def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emit to clients of every worker; same parameters as ``Server.emit``."""
        room = to or room
        if kwargs.get("ignore_queue"):
            return super().emit(  # type: ignore[no-any-return]
                event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                callback=callback, ignore_queue=True,
            )
        namespace = namespace or "/"
        ack = None
        if callback is not None:
            if self.server is None:
                raise RuntimeError("Callbacks can only be issued from the context of a server.")
            if room is None:
                raise ValueError("Cannot use callback without a room set.")
            ack = (room, namespace, self._generate_ack_id(room, callback))
        # Arguments travel as a list (a tuple means several arguments); bytes
        # stay bytes inside it, so no base64 and binary=False.
        args = list(data) if isinstance(data, tuple) else [data]
        message = {
            "method": "emit", "event": event, "data": args, "binary": False,
            "namespace": namespace, "room": room, "skip_sid": skip_sid,
            "callback": ack, "host_id": self.host_id,
        }
        # Publish first: a frame that cannot travel (too large, not
        # encodable) raises here, before any client got the message.
        self._publish(message)
        self._handle_emit(message)

    def _publish(self, data: dict[str, Any]) -> None:
        self._attach().publish(self.bus_channel, data)

    def _listen(self) -> Any:  # pragma: no cover - the bus client listens for us
        raise NotImplementedError("BarrelManager receives through the worker's bus client")

    def _on_frame(self, frame: Frame) -> None:
        message = frame.payload
        method = message.get("method")
        mine = message.get("host_id") == self.host_id
        if method == "callback":
            if mine:
                self._handle_callback(message)
            return
        if mine:
            return  # already handled locally when it was sent
        handler_name = _LOCAL_HANDLERS.get(method) if isinstance(method, str) else None
        if handler_name is None:
            self._get_logger().warning("barrel: unknown bus method %r ignored", method)
            return
        getattr(self, handler_name)(message)
