"""The cluster API's and recovery's parts without a bus: who is alive, a request's answers,
what travels, what a reconnecting client missed."""
from __future__ import annotations

import time
from typing import Any

import gevent

from gunicorn_barrel.sio import recovery
from gunicorn_barrel.sio.local_answers import plain
from gunicorn_barrel.sio.peers import Peers
from gunicorn_barrel.sio.pending import PendingRequest
from gunicorn_barrel.sio.recovery import LoggedEmit, Session


def test_a_peer_is_alive_until_it_is_silent_past_the_timeout_or_says_bye() -> None:
    peers = Peers(timeout=10)
    assert peers.heard("a", now=0) is True
    assert peers.heard("a", now=5) is False  # a heartbeat of a known peer
    assert peers.heard("b", now=6) is True
    assert peers.alive(now=15) == ["a", "b"]
    assert peers.alive(now=15.5) == ["b"]  # a: silent for 10.5 s
    assert peers.heard("a", now=16) is True  # back: new again
    peers.left("b")
    assert peers.alive(now=16) == ["a"]


def test_a_request_returns_complete_answers_only_and_counts_the_rest_missing() -> None:
    pending = PendingRequest(["a", "b", "c"])
    pending.add("a", [1, 2], more=True)
    pending.add("a", [3], more=False)
    pending.add("b", [4], more=True)  # b's last part never comes
    pending.add("x", [99], more=False)  # not asked: ignored
    assert pending.wait(0.01) == 2
    assert (pending.values, pending.answered) == ([1, 2, 3], 1)


def test_a_failed_answer_is_missing_with_its_error_and_a_peer_that_left_is_not() -> None:
    pending = PendingRequest(["a", "b", "c"])
    pending.add("a", [], more=False, error="ValueError: no")
    pending.forget("b")
    pending.add("c", ["ok"], more=False)
    assert pending.wait(0) == 1
    assert (pending.values, pending.errors, pending.answered) == (["ok"], ["ValueError: no"], 1)


def test_a_request_ends_as_soon_as_the_last_answer_arrives() -> None:
    pending = PendingRequest(["a"])
    gevent.spawn_later(0.01, pending.add, "a", ["v"], False)
    assert pending.wait(60) == 0  # not 60 s: the wait ends at the answer
    assert PendingRequest([]).wait(60) == 0  # nobody else: nothing to wait for


def test_values_msgpack_cannot_carry_travel_as_their_repr() -> None:
    assert plain({"a": (1, b"x"), 2: {3}}) == {"a": [1, b"x"], "2": "{3}"}
    nested: list = []
    deep = nested
    for _ in range(40):
        deep.append([])
        deep = deep[0]
    assert isinstance(plain(nested), list)  # bounded depth, no RecursionError


# -- connection state recovery (sio.recovery) ---------------------------------------------

def _emit(mid: str, room: Any = None, skip: Any = None, namespace: str = "/") -> LoggedEmit:
    return LoggedEmit(mid, namespace, room, skip, {"mid": mid})


def _session(sid: str = "s1", rooms: list[Any] | None = None) -> Session:
    return Session("pid-1", sid, "/", rooms or [], {}, time.monotonic())


def test_an_emit_selects_a_session_as_python_socketio_would_have_delivered_it() -> None:
    session = _session(rooms=["lobby"])
    assert _emit("a").selects(session)  # everyone
    assert _emit("a", room="lobby").selects(session)
    assert _emit("a", room=["x", "lobby"]).selects(session)
    assert _emit("a", room="s1").selects(session)  # its own sid is a room
    assert not _emit("a", room="other").selects(session)
    assert not _emit("a", skip="s1").selects(session)
    assert not _emit("a", skip=["x", "s1"]).selects(session)
    assert not _emit("a", namespace="/chat").selects(session)


def test_what_a_session_missed_is_what_followed_its_offset_in_the_log(monkeypatch: Any) -> None:
    monkeypatch.setattr(recovery, "_limits", recovery.Limits(max_packets=100))
    log = recovery.PacketLog()
    for n in range(150):
        log.append(_emit(f"m{n}", room="lobby" if n % 2 else None))
    assert len(log) == 100  # bounded: the oldest went
    session = _session()  # not in lobby: every other emit
    assert [e.mid for e in recovery.missed(log, session, "m140") or []] == [
        "m142", "m144", "m146", "m148"]
    assert recovery.missed(log, session, "m149") == []
    assert recovery.missed(log, session, "m10") is None  # no longer kept: a fresh session
    assert recovery.missed(log, session, None) is None  # the client received nothing yet


def test_a_kept_session_is_handed_out_once_and_not_after_its_time(monkeypatch: Any) -> None:
    monkeypatch.setattr(recovery, "_limits", recovery.Limits(max_disconnection=60))
    sessions = recovery.Sessions()
    sessions.keep(_session())
    assert sessions.take("pid-1") is not None
    assert sessions.take("pid-1") is None  # once
    old = _session()
    old.disconnected_at -= 61
    sessions.keep(old)
    assert sessions.take("pid-1") is None and len(sessions) == 0


def test_emit_ids_are_unique_and_change_prefix_after_fork() -> None:
    ids = recovery.MessageIds()
    first = [ids.next() for _ in range(3)]
    ids.reset()
    assert len(set(first + [ids.next()])) == 4 and first[0].endswith(".1")


def test_a_session_from_a_malformed_answer_is_refused() -> None:
    assert Session.from_answer({"sid": 1, "namespace": "/", "rooms": []}) is None
    answer = _session(rooms=["a"]).to_answer()
    restored = Session.from_answer(answer)
    assert restored is not None and (restored.sid, restored.rooms) == ("s1", ["a"])
