"""The steps of connection state recovery in a worker (the state is in sio.recovery).

1. ``persist``: a connection lost -> its sockets' sessions kept by this worker;
2. ``prepare``: a CONNECT with ``{pid, offset}`` -> the session taken from
   whichever worker keeps it, and what it missed from this worker's log;
3. (BarrelManager.basic_enter_room: the sid, rooms and data restored, later
   emits to it held);
4. ``release``: once the CONNECT answer went out, the missed and held emits
   sent in order; then the socket gets emits as any other.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from engineio import packet as engineio_packet
from socketio import packet as socketio_packet

from gunicorn_barrel.sio import local_answers
from gunicorn_barrel.sio.recovery import RECOVERABLE_REASONS, RecoveryState, Restoring, Session, missed

log = logging.getLogger("gunicorn_barrel.recovery")

# How long a reconnecting client's CONNECT waits for the worker keeping its session.
TAKE_TIMEOUT = 3.0


def persist(manager: Any, state: RecoveryState, eio_sid: str, reason: Any) -> None:
    """Keep the sessions of a connection that was lost (not closed on purpose)."""
    if str(reason) not in RECOVERABLE_REASONS:
        return
    for namespace in list(manager.get_namespaces()):
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        pid = state.pids.get(sid) if sid is not None else None
        if sid is None or pid is None or not manager.is_connected(sid, namespace):
            continue
        try:
            data = manager.server.get_session(sid, namespace=namespace)
        except KeyError:
            data = {}
        rooms = [r for r in manager.get_rooms(sid, namespace) if r != sid]
        state.sessions.keep(Session(pid, sid, namespace, local_answers.plain(rooms),
                                    local_answers.plain(data), time.monotonic()))


def take_local(state: RecoveryState, pid: Any) -> list[dict[str, Any]]:
    """This worker's answer to a take_session request: [the session], once, or []."""
    session = state.sessions.take(pid) if isinstance(pid, str) else None
    return [session.to_answer()] if session is not None else []


def prepare(manager: Any, state: RecoveryState, namespace: str, pid: str, offset: Any) -> Restoring | None:
    """The session ``pid`` and the emits it missed after ``offset``; None: a fresh session."""
    session = state.sessions.take(pid)
    if session is None:
        found, _missing = manager.node.request("take_session", namespace, {"pid": pid}, TAKE_TIMEOUT,
                                               until_found=True)
        answers = [a for a in found.values if isinstance(a, Mapping)]
        session = Session.from_answer(answers[0]) if answers else None
    if session is None or session.namespace != namespace:
        log.info("barrel recovery: session %s not found (expired, taken, or its worker is gone)", pid)
        return None
    lost = missed(state.log, session, offset)
    if lost is None:
        log.info("barrel recovery: offset %r of session %s is no longer kept", offset, pid)
        return None
    return Restoring(session, lost)


def release(manager: Any, state: RecoveryState, sid: str, namespace: str) -> None:
    """Send a restored socket what it missed and what came meanwhile, in order; then let go."""
    held = state.held.get(sid)
    if held is None:
        return
    if not manager.is_connected(sid, namespace):  # the connect handler refused it
        state.held.pop(sid, None)
        return
    while held:  # sending may yield, and more may be held meanwhile
        replay(manager, sid, namespace, held.pop(0))
    del state.held[sid]


def replay(manager: Any, sid: str, namespace: str, message: Mapping[str, Any]) -> None:
    """Send one emit (a bus message) to one socket of this worker."""
    eio_sid = manager.eio_sid_from_sid(sid, namespace)
    encoded: Any = message.get("encoded")
    if eio_sid is None:
        return
    if not isinstance(encoded, str):  # arguments with binary attachments: several engine.io packets
        args = message.get("data")
        if not isinstance(args, list):
            return
        encoded = manager.server.packet_class(socketio_packet.EVENT, namespace=namespace,
                                              data=[message.get("event"), *args]).encode()
    for part in encoded if isinstance(encoded, list) else [encoded]:
        manager.server._send_eio_packet(eio_sid, engineio_packet.Packet(engineio_packet.MESSAGE, part))
