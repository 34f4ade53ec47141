"""The cluster API's parts without a bus: who is alive, a request's answers, what travels."""
from __future__ import annotations

import gevent

from gunicorn_barrel.sio.local_answers import plain
from gunicorn_barrel.sio.peers import Peers
from gunicorn_barrel.sio.pending import PendingRequest


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
