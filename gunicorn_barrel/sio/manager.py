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

import functools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from engineio import packet as engineio_packet
from socketio import PubSubManager
from socketio import packet as socketio_packet

from gunicorn_barrel.bus import api as bus_client
from gunicorn_barrel.bus import channels
from gunicorn_barrel.bus.wire import Frame
from gunicorn_barrel.metrics import catalog, recorder
from gunicorn_barrel.runtime import sids
from gunicorn_barrel.sio import local_answers, recovery, recovery_flow
from gunicorn_barrel.sio.cluster_node import ClusterNode

_LOCAL_HANDLERS = {
    "emit": "_deliver",
    "disconnect": "_handle_disconnect",
    "enter_room": "_handle_enter_room",
    "leave_room": "_handle_leave_room",
    "close_room": "_handle_close_room",
}

_instances: weakref.WeakSet[BarrelManager] = weakref.WeakSet()

# This worker's counts (zeroed in each worker after fork, see metrics.recorder).
_emits = recorder.process().series(catalog.metric("barrel_emits_total"))
_connects = recorder.process().series(catalog.metric("barrel_socketio_connects_total"))
_disconnects = recorder.process().series(catalog.metric("barrel_socketio_disconnects_total"))


def _new_host_ids_after_fork() -> None:
    # An id inherited across fork would make workers drop each other's
    # messages as their own (seen with --preload: 7 of 16 clients reached).
    for manager in list(_instances):
        manager.host_id = _new_host_id()
        manager._attached_pid = None
        if manager.recovery is not None:  # the parent's log, sessions and ids are not this worker's
            manager.recovery = recovery.RecoveryState()


def _new_host_id() -> str:
    # It names this worker: an ack travels to the one worker waiting for it
    # (see BarrelManager._channel_for).
    try:
        worker: str | None = channels.worker_name(sids.instance_tag(), os.getpid())
    except RuntimeError:  # a --preload app, before on_starting: renamed after fork
        worker = None
    return channels.host_id(worker, uuid.uuid4().hex)


os.register_at_fork(after_in_child=_new_host_ids_after_fork)


def attach_all(_bus: bus_client.Bus | None = None) -> None:
    """Subscribe every manager of this worker to the bus now, not at its first client.

    zeromq subscriptions take a moment to reach the broadcaster; doing it when
    the bus connects (worker start) means no emit from another worker can pass
    by unheard. Managers made at app import (before) are attached then.
    """
    for manager in list(_instances):
        if not manager.write_only:
            manager._attach()


bus_client.port.when_connected(attach_all)


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
        connection_state_recovery: bool = False,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only, logger=logger)
        # Connection state recovery (sio.recovery): off by default, as in Node, since
        # every event then carries one more argument, its offset.
        self.recovery = recovery.RecoveryState() if connection_state_recovery else None
        self.host_id = _new_host_id()
        # Messages for every worker; and for one worker (a sid's owner, an
        # ack's origin) on a channel only that worker subscribes to, so the
        # broadcaster's PUB socket filters them out for the others. The
        # second name must not start with the first: zeromq matches prefixes.
        # Pids repeat across hosts: the instance's tag makes the name unique
        # on a bus shared by several instances.
        self.bus_channel = channels.sio_channel(channel)
        self._channel_name = channel
        self._attached_pid: int | None = None
        # The cluster API's part in this manager (gunicorn_barrel.cluster), and the
        # auth and time of each connection's CONNECT packet, which fetch_sockets reports.
        self.node = ClusterNode(self)
        self.handshakes: dict[tuple[str, str], local_answers.Handshake] = {}
        _instances.add(self)

    def initialize(self) -> None:
        # Skip PubSubManager.initialize: it starts a listener thread per
        # manager, while the worker's bus client already has one.
        super(PubSubManager, self).initialize()
        self._attach()
        self._get_logger().info("barrel manager attached to the bus (host_id %s)", self.host_id)

    def _attach(self) -> bus_client.Bus:
        bus = bus_client.port.bus()
        if self._attached_pid != os.getpid() and not self.write_only:
            bus.subscribe(self.bus_channel, self._on_frame)
            bus.subscribe(self._own_channel(), self._on_frame)
            self._attached_pid = os.getpid()
            self.node.start()
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
        _emits.value += 1
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
        # A tuple is several arguments, None is none (as in python-socketio).
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        mid = None
        if self.recovery is not None and ack is None:  # the offset, last argument (as in Node)
            mid = self.recovery.ids.next()
            args.append(mid)
        # Encoded once, here: the receiving workers only write it out. With an
        # ack id (one per client) or binary attachments the receivers build the packet.
        encoded = None if ack is not None else self._encode(namespace, event, args)
        message = channels.emit_message(self.host_id, event, args, namespace, room, skip_sid,
                                        ack, encoded)
        if mid is not None:
            message["mid"] = mid
        # Publish first: a frame that cannot travel (too large, not
        # encodable) raises here, before any client got the message. An
        # emit to a sid of this worker needs no bus at all.
        channel = self._channel_for(message)  # once: it may check a sid's MAC
        if channel != self._own_channel():
            self._attach().publish(channel, message)
        self._deliver(message)

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
        # A sid enters the room None when it connects to a namespace, in every
        # tested python-socketio (5.14 in connect(), later ones in pre_connect()).
        restoring = None
        if room is None and self.recovery is not None and eio_sid is not None:
            restoring = self.recovery.restoring.pop((eio_sid, namespace), None)
            if restoring is not None:  # held from now on: nothing overtakes what it missed
                self.recovery.held[sid] = [entry.message for entry in restoring.missed]
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is None:
            _connects.value += 1
        if restoring is not None:
            for name in restoring.session.rooms:
                super().basic_enter_room(sid, namespace, name, eio_sid=eio_sid)
            self.server.save_session(sid, restoring.session.data or {}, namespace=namespace)

    def remember_connect(self, eio_sid: str, namespace: str, auth: Any) -> None:
        """Keep what a CONNECT packet carried (compat.socketio_connect calls it before python-socketio
        handles the packet)."""
        self.handshakes[(eio_sid, namespace)] = (auth, int(time.time() * 1000))

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        members = self.rooms.get(namespace, {}).get(None, {})
        connected = sid in members
        if connected:
            self.handshakes.pop((members[sid], namespace), None)
        if self.recovery is not None:
            self.recovery.pids.pop(sid, None)
            self.recovery.held.pop(sid, None)
        super().basic_disconnect(sid, namespace, **kwargs)
        if connected:
            _disconnects.value += 1

    def _encode(self, namespace: str, event: str, args: list[Any]) -> str | None:
        """The socket.io packet of an event as engine.io sends it, or None if it has attachments."""
        if self.server is None:
            return None
        pkt = self.server.packet_class(socketio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        return encoded if isinstance(encoded, str) else None

    def _deliver(self, message: Mapping[str, Any]) -> None:
        if self.recovery is not None:
            self.recovery.log_emit(message)
            if self.recovery.held:
                message = self._hold(message)
        encoded = message.get("encoded")
        if not isinstance(encoded, str):
            self._emit_args(message)
            return
        namespace = message.get("namespace") or "/"
        if namespace not in self.rooms:
            return
        skip = message.get("skip_sid")
        skip_sids = skip if isinstance(skip, list) else [skip]
        eio_pkt = engineio_packet.Packet(engineio_packet.MESSAGE, encoded)
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid not in skip_sids:
                self.server._send_eio_packet(eio_sid, eio_pkt)

    def _hold(self, message: Mapping[str, Any]) -> Mapping[str, Any]:
        """Keep ``message`` for the sockets being restored that it goes to; the message for the others."""
        assert self.recovery is not None
        if message.get("callback"):  # an emit with an ack is not replayed (as in Node): not held
            return message
        namespace = message.get("namespace") or "/"
        skip = message.get("skip_sid")
        skipped = list(skip) if isinstance(skip, list) else [] if skip is None else [skip]
        held = [sid for sid, _ in self.get_participants(namespace, message.get("room"))
                if sid in self.recovery.held and sid not in skipped]
        for sid in held:
            self.recovery.held[sid].append(message)
        return {**message, "skip_sid": skipped + held} if held else message

    def release_restored(self, sid: str, namespace: str) -> None:
        """After python-socketio answered a recovering CONNECT: what the socket missed, then live."""
        if self.recovery is not None:
            recovery_flow.release(self, self.recovery, sid, namespace)

    def keep_lost_sessions(self, eio_sid: str, reason: Any) -> None:
        """Before python-socketio forgets a lost connection: keep its sessions for recovery."""
        if self.recovery is not None:
            recovery_flow.persist(self, self.recovery, eio_sid, reason)

    def restore(self, eio_sid: str, namespace: str, auth: Any) -> str | None:
        """Before python-socketio handles a CONNECT: the sid of the session it recovers, if any."""
        if self.recovery is None or not isinstance(auth, dict) or not isinstance(auth.get("pid"), str):
            return None
        restoring = recovery_flow.prepare(self, self.recovery, namespace, auth["pid"], auth.get("offset"))
        if restoring is None:
            return None
        self.recovery.restoring[(eio_sid, namespace)] = restoring
        self.recovery.pids[restoring.session.sid] = restoring.session.pid
        return restoring.session.sid

    def _emit_args(self, message: Mapping[str, Any]) -> None:
        """Emit to this worker's clients a message that carries its arguments, not a packet.

        Not PubSubManager._handle_emit: before python-socketio 5.16 it passed
        the argument list on as one argument (``call("q", "ping")`` reached the
        client as ``["ping"]``). A tuple is spread into arguments by every version.
        """
        args = message.get("data")
        if not isinstance(args, list):
            self._get_logger().warning("barrel: emit without an argument list ignored: %r", args)
            return
        remote = message.get("callback")
        callback = None
        if isinstance(remote, list | tuple) and len(remote) == 3:  # an ack travels back to its sender
            callback = functools.partial(self._return_callback, message.get("host_id"), *remote)
        super(PubSubManager, self).emit(
            message.get("event"), tuple(args), namespace=message.get("namespace"),
            room=message.get("room"), skip_sid=message.get("skip_sid"), callback=callback,
        )

    def _publish(self, data: dict[str, Any]) -> None:
        self._attach().publish(self._channel_for(data), data)

    def _own_channel(self) -> str:
        return self._worker_channel(channels.worker_name(sids.instance_tag(), os.getpid()))

    def _worker_channel(self, worker: str) -> str:
        return channels.worker_channel(worker, self._channel_name)

    def _channel_for(self, message: Mapping[str, Any]) -> str:
        """The channel of a message: the one worker's it concerns, if there is one, else everyone's."""
        method = message.get("method")
        if self.recovery is not None and method not in ("callback", "response"):
            # Every worker sees every emit: any of them may have to replay it to a
            # socket that reconnects there (sio.recovery).
            return self.bus_channel
        if method in ("callback", "response"):  # to the worker waiting for it, on any instance
            worker = channels.worker_of_host(message.get("to" if method == "response" else "host_id"))
            return self.bus_channel if worker is None else self._worker_channel(worker)
        target = None
        if method in ("disconnect", "enter_room", "leave_room"):
            target = message.get("sid")
        elif method == "emit":
            target = message.get("room")  # a sid is a room too
        # owner_of checks the sid's MAC: only sids of this instance have a known owner.
        pid = sids.owner_of(target) if isinstance(target, str) else None
        if pid is None:
            return self.bus_channel
        return self._worker_channel(channels.worker_name(sids.instance_tag(), pid))

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
        if method in channels.CLUSTER_METHODS:
            # Counted apart from the app's frames, as cluster_frames_sent is.
            bus_client.port.bus().counters["cluster_frames_received"] += 1
            if not mine:
                self.node.on_message(message)
            return
        if mine:
            return  # already handled locally when it was sent
        handler_name = _LOCAL_HANDLERS.get(method) if isinstance(method, str) else None
        if handler_name is None:
            self._get_logger().warning("barrel: unknown bus method %r ignored", method)
            return
        getattr(self, handler_name)(message)
