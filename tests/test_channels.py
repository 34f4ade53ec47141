"""Unit tests of the bus's channel names and message schema (gunicorn_barrel.bus.channels), sans-io."""
from __future__ import annotations

from typing import Any

import pytest

from gunicorn_barrel.bus import channels, wire

ORIGIN = bytes(range(16))


def _through_the_wire(payload: Any) -> Any:
    parts = wire.encode(wire.Frame("c", ORIGIN, 1, payload, base=1), 1 << 20)
    return wire.decode(parts, 1 << 20).payload


def test_channel_names_are_the_ones_running_instances_use() -> None:
    # Instances of different versions share a bus (Redis, federation): these names are wire format.
    assert channels.sio_channel() == "sio:socketio"
    assert channels.sio_channel("chat") == "sio:chat"
    assert channels.worker_channel(channels.worker_name("0a1b2c", 1234)) == "sio@0a1b2c.1234:socketio"
    assert channels.event_channel("cache-clear") == "ev:cache-clear"
    assert channels.STORE_CHANGES == "store"
    assert channels.redis_prefix("ns") + b"sio:socketio" == b"barrel:bus:ns:sio:socketio"
    assert channels.redis_prefix("") == b"barrel:bus::"


def test_no_worker_hears_another_workers_channel_by_prefix() -> None:
    # zeromq SUB sockets match prefixes: the broadcaster's PUB socket sends one
    # worker's messages to that worker only if no other channel is a prefix of its channel.
    names = [channels.sio_channel()]
    names += [channels.worker_channel(channels.worker_name(tag, pid))
              for tag in ("t", "t1") for pid in (1, 12)]
    for subscribed in names:
        for other in names:
            if other != subscribed:
                assert not other.startswith(subscribed), (subscribed, other)


@pytest.mark.parametrize("name", ["", None, 3])
def test_event_names_are_non_empty_strings(name: Any) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        channels.event_channel(name)


def test_what_crosses_hosts() -> None:
    for channel in (channels.sio_channel(), channels.worker_channel("t.1"), channels.event_channel("x")):
        assert channels.crosses_hosts(channel.encode())
    for channel in (channels.STORE_CHANGES, channels.HEARTBEAT, channels.NACK):
        assert not channels.crosses_hosts(channel.encode())


def test_the_bus_own_channels_are_reserved() -> None:
    for channel in (channels.HEARTBEAT, channels.NACK):
        assert channels.is_reserved(channel.encode())
        with pytest.raises(ValueError, match="reserved for the bus"):
            channels.check_user_channel(channel)
    assert not channels.is_reserved(b"sio:socketio") and not channels.is_reserved(b"")
    channels.check_user_channel("sio:socketio")


def test_a_host_id_names_its_worker() -> None:
    host = channels.host_id(channels.worker_name("tag", 42), "f" * 32)
    assert host == "tag.42|" + "f" * 32
    assert channels.worker_of_host(host) == "tag.42"
    # A manager made before fork (renamed after), an Emitter's id, garbage: no worker.
    assert channels.worker_of_host(channels.host_id(None, "abc")) is None
    assert channels.worker_of_host("f" * 32) is None
    assert channels.worker_of_host(None) is None


def test_an_encoded_emit_carries_the_packet_only() -> None:
    message = channels.emit_message("h", "news", [1], "/", room="r", encoded='2["news",1]')
    assert message == {"method": "emit", "namespace": "/", "room": "r", "skip_sid": None,
                       "callback": None, "host_id": "h", "encoded": '2["news",1]'}
    assert _through_the_wire(message) == message


def test_an_emit_for_receivers_to_build_keeps_bytes_as_bytes() -> None:
    message = channels.emit_message("h", "blob", [b"\x00\xff", {"k": 1}], "/chat", skip_sid=["s"],
                                    callback=("sid", "/chat", 7))
    assert message["event"] == "blob" and message["binary"] is False
    assert "encoded" not in message
    received = _through_the_wire(message)
    assert received["data"] == [b"\x00\xff", {"k": 1}]
    assert received["callback"] == ["sid", "/chat", 7]  # msgpack has lists only; python-socketio takes both


def test_an_event_message() -> None:
    assert _through_the_wire(channels.event_message({"why": b"x"})) == {"data": {"why": b"x"}}


def test_a_nack_round_trips_and_a_malformed_one_is_refused() -> None:
    nack = channels.Nack(ORIGIN, "sio:socketio", 3, 9)
    assert channels.Nack.from_payload(_through_the_wire(nack.payload())) == nack
    good = nack.payload()
    for bad in ({**good, "first": 0}, {**good, "last": 2}, {**good, "last": 2**64},
                {**good, "channel": b"x"}, {**good, "origin": "x"}, {**good, "first": "3"},
                {k: v for k, v in good.items() if k != "last"}):
        assert channels.Nack.from_payload(bad) is None, bad


def test_heartbeat_acks_reach_their_sender_only() -> None:
    other = b"o" * 16
    payload = channels.heartbeat_payload({(ORIGIN, b"sio:socketio"): 5, (ORIGIN, b"ev:x"): 2,
                                          (other, b"sio:socketio"): 9}, {"federation_queued": 1})
    received = _through_the_wire(payload)
    assert sorted(channels.acks_for(ORIGIN, received)) == [("ev:x", 2), ("sio:socketio", 5)]
    assert list(channels.acks_for(other, received)) == [("sio:socketio", 9)]
    assert received["counters"] == {"federation_queued": 1}
    assert "counters" not in channels.heartbeat_payload({})


def test_malformed_heartbeat_acks_are_ignored() -> None:
    mine = ORIGIN.hex() + "/"
    assert list(channels.acks_for(ORIGIN, {"acks": [1, 2]})) == []
    assert list(channels.acks_for(ORIGIN, {})) == []
    assert list(channels.acks_for(ORIGIN, {"acks": {mine + "c": "5", mine + "d": 4}})) == [("d", 4)]
