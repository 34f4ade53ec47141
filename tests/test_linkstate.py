"""Unit tests of the federation link protocol and state (gunicorn_barrel.federation.linkstate), sans-io."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gunicorn_barrel.bus import channels
from gunicorn_barrel.config.values import parse_peers
from gunicorn_barrel.federation import delivery, keys, linkstate
from tests.harness import REPO

EPOCH = b"e" * 16


def test_messages_round_trip() -> None:
    hello = linkstate.Hello(EPOCH, "node-key", False, b"a" * 16, 2**40)
    assert linkstate.decode(linkstate.encode_hello(hello)) == hello
    data = linkstate.decode(linkstate.encode_data(EPOCH, 7, 3, [b"sio:x", b"body"]))
    assert data == linkstate.Data(EPOCH, 7, 3, [b"sio:x", b"body"])


@pytest.mark.parametrize("message", [
    b"", b"X", b"H" + EPOCH, b"H" + EPOCH + b"2" + bytes(24) + b"node",
    b"H" + EPOCH + b"1" + bytes(24), b"H" + EPOCH + b"1" + bytes(24) + b"\xff",
    b"D" + EPOCH + bytes(16), b"D" + EPOCH + bytes(16) + b"\x05sio:x",
    b"D" + EPOCH + bytes(16) + b"\x00body",
])
def test_malformed_messages_are_refused(message: bytes) -> None:
    with pytest.raises(linkstate.LinkMessageError):
        linkstate.decode(message)


def test_outgoing_keeps_until_acked_and_resends_in_order() -> None:
    counters: Counter[str] = Counter()
    out = linkstate.Outgoing(EPOCH, 100, counters)
    for i in range(5):
        out.add([b"sio:x", bytes([i])], now=0.0)
    out.ack(b"old-epoch-xxxxxx", 5)  # an ack meant for a previous run changes nothing
    assert len(out.unacked) == 5
    assert out.stalled(now=1.0) and not out.stalled(now=0.5)
    out.ack(EPOCH, 2, now=1.0)
    assert not out.stalled(now=1.5)
    resent = [linkstate.decode(m) for m in out.resend(now=1.0)]
    assert [(d.seq, d.base) for d in resent] == [(3, 3), (4, 3), (5, 3)]  # type: ignore[union-attr]
    assert out.resend(now=1.5, older_than=1.0) == []
    assert len(out.resend(now=2.0, older_than=1.0)) == 3
    assert counters["federation_frames_resent"] == 6


def test_outgoing_holds_new_frames_while_blocked_and_resumes_in_order() -> None:
    out = linkstate.Outgoing(EPOCH, 100, Counter())
    assert out.add([b"sio:x", b"1"], now=0.0) is None  # the peer has not said hello yet
    assert [seq for seq, _ in out.unblock(0.0)] == [1]
    message = out.add([b"sio:x", b"2"], now=0.0)
    assert message is not None and linkstate.decode(message).seq == 2  # type: ignore[union-attr]
    out.add([b"sio:x", b"3"], now=0.0)
    out.block(3)  # sending 3 failed: 4 waits behind it
    assert out.add([b"sio:x", b"4"], now=0.0) is None
    assert [seq for seq, _ in out.unblock(1.0)] == [3, 4]
    out.block()  # a new connection: everything unacknowledged again
    out.ack(EPOCH, 1, now=1.0)
    assert [seq for seq, _ in out.unblock(2.0)] == [2, 3, 4]


def test_outgoing_bound_drops_the_oldest_and_counts() -> None:
    counters: Counter[str] = Counter()
    out = linkstate.Outgoing(EPOCH, 100, counters)
    for i in range(150):
        out.add([b"sio:x", b"%d" % i], now=0.0)
    assert len(out.unacked) == 100 and next(iter(out.unacked)) == 51
    assert counters["federation_frames_dropped"] == 50
    assert out.base() == 51


def test_outgoing_discard_forgets_without_counting_a_drop() -> None:
    counters: Counter[str] = Counter()
    out = linkstate.Outgoing(EPOCH, 100, counters)
    for i in range(3):
        out.add([b"sio:x", bytes([i])], now=0.0)
    out.discard()  # the peer said it wants no frames (a send-only emitter)
    assert not out.unacked and out.base() == 4 and counters["federation_frames_dropped"] == 0


def test_incoming_acks_the_contiguous_prefix_and_restarts_with_the_sender() -> None:
    inc = linkstate.Incoming()
    for seq in (1, 2, 4, 5):
        inc.received(EPOCH, seq, base=1)
    assert inc.contiguous == 2
    inc.received(EPOCH, 3, base=1)
    assert inc.contiguous == 5
    # A receiver that restarted: the sender's base says where the unacked part starts.
    fresh = linkstate.Incoming()
    fresh.received(EPOCH, 500, base=450)
    assert fresh.contiguous == 449
    # The sender restarted: its numbering starts again.
    fresh.received(b"n" * 16, 1, base=1)
    assert (fresh.epoch, fresh.contiguous) == (b"n" * 16, 1)


def test_seen_filter_passes_each_frame_once_in_any_order() -> None:
    seen = linkstate.SeenFilter(window=1000)
    # Shuffled within blocks of 500 (less than the window), and everything twice.
    rng = random.Random(1)
    order = [s for start in range(1, 3001, 500) for s in rng.sample(range(start, start + 500), 500)]
    passed = [s for s in order + order if seen.first_time(b"o", b"sio:x", s, 0.0)]
    assert sorted(passed) == list(range(1, 3001))


def test_seen_filter_memory_is_bounded_and_streams_expire() -> None:
    seen = linkstate.SeenFilter(window=100, ttl=10.0)
    for s in range(1, 100_000, 2):  # every other frame never arrives
        assert seen.first_time(b"o", b"sio:x", s, 0.0)
    stream = seen._streams[(b"o", b"sio:x")]
    assert len(stream.ahead) <= 125
    assert not seen.first_time(b"o", b"sio:x", 3, 0.0)  # older than the window: taken as seen
    # A stream first heard mid-way accepts earlier frames that come later by another path.
    assert seen.first_time(b"p", b"sio:x", 5000, 0.0)
    assert seen.first_time(b"p", b"sio:x", 4990, 0.0)
    seen.expire(now=100.0)
    assert len(seen) == 0


def test_links_acknowledge_only_what_every_live_worker_read() -> None:
    local = delivery.LocalDelivery(stale_after=2.0)
    assert local.safe([], 0.0) is None  # no worker (a hub): what arrived is safe
    assert local.safe([11, 12], 0.0) == {}  # workers, no mark passed yet
    first = local.mark({"b": (EPOCH, 5)})
    second = local.mark({"b": (EPOCH, 9)})
    local.echoed(11, second, 0.1)
    assert local.safe([11, 12], 0.1) == {}  # 12 read neither heartbeat
    local.echoed(12, first, 0.1)
    assert local.safe([11, 12], 0.1) == {"b": (EPOCH, 5)}
    local.echoed(12, second, 0.2)
    assert local.safe([11, 12], 0.2) == {"b": (EPOCH, 9)}
    assert local.safe([11, 12], 0.3) == {"b": (EPOCH, 9)}  # asked again: the same
    # A newly subscribed worker needs only what comes after; a frozen one stops holding links back.
    third = local.mark({"b": (EPOCH, 20)})
    local.echoed(11, third, 0.3)
    assert local.safe([11, 12, 13], 0.3) == {"b": (EPOCH, 9)}
    local.echoed(13, third, 0.4)
    assert local.safe([11, 12, 13], 1.0) == {"b": (EPOCH, 9)}
    assert local.safe([11, 12, 13], 2.3) == {"b": (EPOCH, 20)}  # 12 silent since 0.2
    assert local.safe([11, 13], 10.0) is None  # every worker silent: what arrived


def test_heartbeat_echo_round_trip() -> None:
    payload = channels.heartbeat_payload({}, None, None, echo=7)
    parts = channels.echo_parts(payload, 4242)
    assert parts is not None and channels.decode_echo(parts) == (4242, 7)
    assert channels.echo_parts(channels.heartbeat_payload({}), 4242) is None
    assert channels.decode_echo([channels.ECHO_TOPIC, b"short"]) is None


def test_parse_peers() -> None:
    assert parse_peers(" b=tcp://h:1, c=tcp://[::1]:2 ,") == [("b", "tcp://h:1"), ("c", "tcp://[::1]:2")]
    for bad in ("tcp://h:1", "=tcp://h:1", "b=ipc://x"):
        with pytest.raises(ValueError):
            parse_peers(bad)


def test_keys_generate_and_load(tmp_path: os.PathLike[str]) -> None:
    a, b = os.path.join(tmp_path, "a"), os.path.join(tmp_path, "b")
    keys.generate(a, "hosta")
    keys.generate(b, "hostb")
    assert oct(os.stat(os.path.join(a, "hosta.key_secret")).st_mode & 0o777) == "0o600"
    with pytest.raises(keys.KeyFileError, match="exists"):
        keys.generate(a, "hosta")
    os.replace(os.path.join(b, "hostb.key"), os.path.join(a, "peers", "hostb.key"))
    ring = keys.load(a)
    assert set(ring.peers) == {"hostb"} and ring.is_authorized(ring.peers["hostb"])
    assert not ring.is_authorized(ring.public) and ring.emitters == {}
    keys.generate(os.path.join(tmp_path, "c"), "cron")
    os.makedirs(os.path.join(a, "emitters"))
    os.replace(os.path.join(tmp_path, "c", "cron.key"), os.path.join(a, "emitters", "cron.key"))
    ring = keys.load(a)
    assert set(ring.peers) == {"hostb"} and set(ring.emitters) == {"cron"}
    assert ring.is_authorized(ring.emitters["cron"])
    keys.generate(a, "second")
    with pytest.raises(keys.KeyFileError, match="exactly one"):
        keys.load(a)
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        keys.load(os.path.join(tmp_path, "nope"))


@pytest.mark.parametrize("args, message", [
    (["--keys", "KEYS"], "give --listen, --peers or both"),
    (["--keys", "/nonexistent", "--listen", "tcp://127.0.0.1:1"], "does not exist"),
    (["--keys", "KEYS", "--peers", "x=tcp://127.0.0.1:1"], "no public key for peer(s) x"),
    (["--keys", "KEYS", "--peers", "tcp://127.0.0.1:1"], "expected NAME=tcp://HOST:PORT"),
])
def test_hub_refuses_bad_arguments_with_the_reason(args: list[str], message: str, tmp_path: Path) -> None:
    keys.generate(str(tmp_path / "k"), "hub")
    args = [str(tmp_path / "k") if a == "KEYS" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "gunicorn_barrel.federation.hub", *args],
                          capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_an_emitters_frames_carry_the_lowest_seq_the_listener_has_not_acknowledged(tmp_path: Path) -> None:
    from gunicorn_barrel.bus import wire
    from gunicorn_barrel.sio.emitter import Emitter

    keys.generate(str(tmp_path / "hub"), "hub")
    keys.generate(str(tmp_path / "cron"), "cron")
    os.replace(tmp_path / "hub" / "hub.key", tmp_path / "cron" / "peers" / "hub.key")
    # Nothing listens there: every frame stays unacknowledged until the test acknowledges it.
    emitter = Emitter("tcp://127.0.0.1:1", keys=str(tmp_path / "cron"))
    try:
        def sent() -> list[tuple[str, int, int]]:
            frames = [wire.decode(emitter._out.unacked._items[s][1], 1 << 20) for s in emitter._out.unacked]
            return [(f.channel, f.seq, f.base) for f in frames]

        emitter.emit("a")
        emitter.event("x")
        emitter.emit("b")
        assert sent() == [("sio:socketio", 1, 1), ("ev:x", 1, 1), ("sio:socketio", 2, 1)]
        emitter._out.ack(emitter._out.epoch, 2)  # the listener has the first two
        emitter.emit("c")
        assert sent()[-1] == ("sio:socketio", 3, 2)
        # Sent again (a new listener): with the base of now, not of when it was first sent.
        again = [linkstate.decode(m) for m in emitter._out.resend(10.0)]
        assert isinstance(again[0], linkstate.Data)
        assert [wire.origin_seq_base(d.frame[1])[1:] for d in again  # type: ignore[union-attr]
                ] == [(2, 2), (3, 2)]
    finally:
        emitter.close(timeout=0)
