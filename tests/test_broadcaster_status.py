"""Unit tests of what a broadcaster tells the outside (bus/zeromq/status.py) and of which federation
links exist from its start (federation/links.py), without sockets."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.zeromq import status
from gunicorn_barrel.federation import keys
from gunicorn_barrel.federation.links import Federation, FederationConfig
from gunicorn_barrel.runtime import endpoints


def test_worker_topics_name_a_pid_and_nothing_else() -> None:
    topic = wire.worker_topic(4242)
    assert wire.worker_pid(topic) == 4242
    for other in (channels.HEARTBEAT.encode(), b"sio:socketio", wire.WORKER_TOPIC + b"12",
                  wire.WORKER_TOPIC + b"x.", wire.WORKER_TOPIC + b"."):
        assert wire.worker_pid(other) is None, other


def test_subscribers_follow_xpub_messages() -> None:
    subs = status.Subscribers()
    subs.on_message(b"\x01" + wire.worker_topic(10))
    subs.on_message(b"\x01" + wire.worker_topic(11))
    subs.on_message(b"\x01" + channels.HEARTBEAT.encode())  # a channel's: not a worker
    subs.on_message(b"\x00" + wire.worker_topic(10))  # worker 10 went away
    assert subs.pids == {11}


def test_a_restarted_broadcaster_waits_for_the_live_workers_of_its_predecessor() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    subs = status.Subscribers()
    assert subs.all_back(0.0)  # a first start waits for nobody
    assert subs.await_previous(None, 0.0) is False
    assert subs.await_previous({"workers": [os.getpid(), dead.pid]}, now=0.0) is True
    assert not subs.all_back(1.0)  # this process (alive) has not subscribed; the dead one is not awaited
    subs.on_message(b"\x01" + wire.worker_topic(os.getpid()))
    assert subs.all_back(1.0)
    # A worker that never comes back holds nothing up for longer than WORKERS_BACK_WITHIN.
    later = status.Subscribers()
    later.await_previous({"workers": [os.getpid()]}, now=0.0)
    assert not later.all_back(status.WORKERS_BACK_WITHIN - 0.1)
    assert later.all_back(status.WORKERS_BACK_WITHIN)


def test_status_file_is_written_when_it_changes_at_most_every_interval(tmp_path: Path) -> None:
    out = status.StatusFile(str(tmp_path))
    out.update({"pid": 1, "workers": [2]}, now=0.0)
    assert endpoints.read_status(str(tmp_path)) == {"pid": 1, "workers": [2]}
    out.update({"pid": 1, "workers": [2, 3]}, now=status.STATUS_INTERVAL / 2)  # too soon
    assert endpoints.read_status(str(tmp_path)) == {"pid": 1, "workers": [2]}
    out.update({"pid": 1, "workers": [2, 3]}, now=status.STATUS_INTERVAL)
    assert endpoints.read_status(str(tmp_path)) == {"pid": 1, "workers": [2, 3]}
    (tmp_path / "broadcaster.status.json").write_text("[not, json")
    assert endpoints.read_status(str(tmp_path)) is None


def _ring(tmp_path: Path, peers: list[str], emitters: list[str]) -> keys.KeyRing:
    for name in ["me", *peers, *emitters]:
        keys.generate(str(tmp_path / name), name)
    for name in peers:
        os.replace(tmp_path / name / f"{name}.key", tmp_path / "me" / "peers" / f"{name}.key")
    (tmp_path / "me" / "emitters").mkdir()
    for name in emitters:
        os.replace(tmp_path / name / f"{name}.key", tmp_path / "me" / "emitters" / f"{name}.key")
    return keys.load(str(tmp_path / "me"))


def test_every_configured_peer_is_queued_for_from_the_start_whichever_side_dials(tmp_path: Path) -> None:
    """A listener that dials c and expects b (both in peers/) and admits the emitter cron: frames
    made before any link is up are kept for b and c, not for the emitter."""
    ring = _ring(tmp_path, ["b", "c"], ["cron"])
    assert ring.is_authorized(ring.emitters["cron"]) and set(ring.peers) == {"b", "c"}
    config = FederationConfig(ring, "tcp://127.0.0.1:1", [("c", "tcp://127.0.0.1:2")], queue_limit=100)
    fed = Federation(config, b"e" * 16, 1024, Counter(), lambda parts, link: None)
    assert sorted((link.name, link in fed.dialed) for link in fed.links()) == [("b", False), ("c", True)]
    frame = wire.encode(wire.Frame("sio:socketio", b"o" * 16, 1, {"x": 1}, base=1), 1024)
    fed.forward(frame, None, now=0.0)
    assert {link.name: len(link.out.unacked) for link in fed.links()} == {"b": 1, "c": 1}
    assert [s["up"] for s in fed.status(0.0)] == [False, False]
    # Without a listener nobody dials in: only the dialed peer has a link.
    dial_only = FederationConfig(ring, None, [("c", "tcp://127.0.0.1:2")], queue_limit=100)
    assert [link.name for link in Federation(dial_only, b"e" * 16, 1024, Counter(),
                                             lambda parts, link: None).links()] == ["c"]
