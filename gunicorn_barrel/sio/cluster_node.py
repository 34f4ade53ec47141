"""One worker's part in the cluster API (gunicorn_barrel.cluster): presence, requests, answers.

A request goes to every other manager on the socket.io channel; each answers
on the asking worker's own channel, in parts of at most ``PART_SIZE`` values,
and the asker waits for the peers it knew alive (``peers``) until a timeout.
One round trip, no polling. Answers are computed in the bus listener
(``local_answers``: quick reads of this worker's rooms), except server-side
events, whose handlers are the app's and run in a greenlet of their own.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import gevent

from gunicorn_barrel.bus import api as bus_api
from gunicorn_barrel.bus import channels
from gunicorn_barrel.bus.wire import FrameTooLarge
from gunicorn_barrel.sio import local_answers, recovery_flow
from gunicorn_barrel.sio.peers import HEARTBEAT_INTERVAL, Peers
from gunicorn_barrel.sio.pending import PendingRequest

log = logging.getLogger("gunicorn_barrel.cluster")

# Values per response frame: a worker holding thousands of sockets answers
# fetch_sockets in parts, each far below the bus's frame limit.
PART_SIZE = 200

ServerEventHandler = Callable[..., Any]


class ClusterNode:
    """The presence, pending requests and server-side event handlers of one BarrelManager."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.peers = Peers()
        self.server_handlers: dict[str, ServerEventHandler] = {}  # registered at import, kept across fork
        self._pending: dict[str, PendingRequest] = {}
        self._heartbeat: gevent.Greenlet | None = None

    # -- presence ----------------------------------------------------------------------

    def start(self) -> None:
        """In a worker whose bus just connected: say hello, then a heartbeat every few seconds."""
        self.peers.clear()
        self._pending.clear()
        self._publish(channels.presence_message("hello", self.manager.host_id))
        self._heartbeat = gevent.spawn(self._beat)
        bus_api.port.when_closing(self._stop)

    def _beat(self) -> None:
        while True:
            gevent.sleep(HEARTBEAT_INTERVAL)
            try:
                self._publish(channels.presence_message("heartbeat", self.manager.host_id))
            except (bus_api.BusClosed, bus_api.BusNotConnected):
                return
            except Exception:  # a bus hiccup must not make this worker vanish for good
                log.exception("barrel cluster: heartbeat not sent")

    def _stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        try:  # the others stop waiting for answers of a worker that is gone
            self._publish(channels.presence_message("bye", self.manager.host_id))
        except Exception:
            log.debug("barrel cluster: bye not sent", exc_info=True)

    def alive_peers(self) -> list[str]:
        return self.peers.alive(time.monotonic())

    # -- messages from the other managers ------------------------------------------------

    def on_message(self, message: Mapping[str, Any]) -> None:
        host = message.get("host_id")
        if not isinstance(host, str):
            return
        match message.get("method"):
            case "hello":
                self.peers.heard(host, time.monotonic())
                self._publish(channels.presence_message("heartbeat", self.manager.host_id))
            case "heartbeat":
                self.peers.heard(host, time.monotonic())
            case "bye":
                self.peers.left(host)
                for pending in list(self._pending.values()):
                    pending.forget(host)
            case "request":
                self.peers.heard(host, time.monotonic())
                self._answer(message)
            case "response":
                self._take_response(host, message)

    def _take_response(self, host: str, message: Mapping[str, Any]) -> None:
        request_id, values, error = message.get("id"), message.get("values"), message.get("error")
        waiting = self._pending.get(request_id) if isinstance(request_id, str) else None
        if waiting is not None and message.get("to") == self.manager.host_id and isinstance(values, list):
            waiting.add(host, values, bool(message.get("more")), error if isinstance(error, str) else None)

    def _answer(self, message: Mapping[str, Any]) -> None:
        kind, params = message.get("kind"), message.get("params")
        namespace = message.get("namespace") or "/"
        if not isinstance(params, dict) or not isinstance(namespace, str):
            log.warning("barrel cluster: malformed request from %s ignored", message.get("host_id"))
            return
        if kind == "server_event":
            gevent.spawn(self._run_server_event, message, params)
            return
        try:
            values = self._local_values(kind, namespace, params)
        except Exception as exc:
            log.exception("barrel cluster: %s request failed here", kind)
            self._respond(message, [], error=f"{type(exc).__name__}: {exc}")
            return
        self._respond(message, values)

    def _local_values(self, kind: Any, namespace: str, params: dict[str, Any]) -> list[Any]:
        manager, room = self.manager, params.get("room")
        match kind:
            case "fetch_sockets":
                return list(local_answers.fetch_sockets(manager, namespace, room))
            case "sockets_join" | "sockets_leave":
                rooms = params.get("rooms")
                return [local_answers.change_rooms(manager, namespace, room, list(rooms or ()),
                                                   join=kind == "sockets_join")]
            case "disconnect_sockets":
                return [local_answers.disconnect_sockets(manager, namespace, room,
                                                         bool(params.get("close")))]
            case "rooms_of":
                sid = params.get("sid")
                return local_answers.rooms_of(manager, namespace, sid) if isinstance(sid, str) else []
            case "room_counts":
                return local_answers.room_counts(manager, namespace)
            case "take_session":
                state = manager.recovery
                return recovery_flow.take_local(state, params.get("pid")) if state is not None else []
        raise ValueError(f"unknown cluster request {kind!r} (a newer barrel on the bus?)")

    def _run_server_event(self, message: Mapping[str, Any], params: dict[str, Any]) -> None:
        event, args = params.get("event"), params.get("args")
        handler = self.server_handlers.get(event) if isinstance(event, str) else None
        wants_answer = bool(params.get("answer"))
        if handler is None or not isinstance(args, list):
            if wants_answer:  # answered, with nothing: no handler here
                self._respond(message, [])
            return
        try:
            result = handler(*args)
        except Exception as exc:
            log.exception("barrel cluster: server-side event %r handler failed", event)
            if wants_answer:
                self._respond(message, [], error=f"{type(exc).__name__}: {exc}")
            return
        if wants_answer:
            self._respond(message, [local_answers.plain(result)])

    def _respond(self, request: Mapping[str, Any], values: list[Any], error: str | None = None) -> None:
        to, request_id = request.get("host_id"), request.get("id")
        if not isinstance(to, str) or not isinstance(request_id, str):
            return
        parts = [values[i:i + PART_SIZE] for i in range(0, len(values), PART_SIZE)] or [[]]
        host = self.manager.host_id
        for n, part in enumerate(parts):
            reply = channels.response_message(host, to, request_id, part, more=n < len(parts) - 1)
            if error is not None:
                reply["error"] = error
            try:
                self._publish(reply)
            except FrameTooLarge as exc:  # the asker counts this worker as not answering
                log.warning("barrel cluster: answer to %s too large for the bus: %s", to, exc)
                failed = channels.response_message(host, to, request_id, [], more=False)
                failed["error"] = f"answer too large for the bus: {exc}"
                self._publish(failed)
                return

    # -- requests of this worker ---------------------------------------------------------

    def request(self, kind: str, namespace: str, params: dict[str, Any], timeout: float,
                until_found: bool = False) -> tuple[PendingRequest, int]:
        """Ask every peer alive now; (their answers, how many gave none within ``timeout``).
        ``until_found``: the first answer with values ends the wait."""
        pending = PendingRequest(self.alive_peers(), until_found)
        request_id = uuid.uuid4().hex
        self._pending[request_id] = pending  # before publishing: an answer may come at once
        try:
            self._publish(channels.request_message(self.manager.host_id, request_id, kind,
                                                   namespace, params))
            missing = pending.wait(timeout)
        finally:
            del self._pending[request_id]
        return pending, missing

    def tell(self, kind: str, namespace: str, params: dict[str, Any]) -> None:
        """A request nobody answers (a server-side event without answers)."""
        self._publish(channels.request_message(self.manager.host_id, uuid.uuid4().hex, kind,
                                               namespace, params))

    def _publish(self, message: Any) -> None:
        self.manager._publish(message)
        # Counted apart from the app's frames: a worker's frames_pushed includes these.
        bus_api.port.bus().counters["cluster_frames_sent"] += 1
