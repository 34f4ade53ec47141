"""Unit and property tests of the sans-io sequencing layer (gunicorn_barrel.bus.sequencing).

No sockets: ``Outbox`` numbers and keeps what a sender pushed until it is
acknowledged, ``Inbox`` delivers each (origin, channel) stream in order,
exactly once, and counts what it had to give up on.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_barrel.bus import fastzmq, wire
from gunicorn_barrel.bus.broadcaster import Broadcaster
from gunicorn_barrel.bus.sequencing import Inbox, Outbox

A = (b"a" * 16, "sio:socketio")
B = (b"b" * 16, "sio:socketio")
A_OTHER_CHANNEL = (b"a" * 16, "sio:other")
GAP_TIMEOUT = 5.0


def _outbox(max_unacked: int = 1000) -> tuple[Outbox[str], Counter[str]]:
    counters: Counter[str] = Counter()
    return Outbox(max_unacked, counters), counters


def _inbox(max_held: int = 1000, gap_timeout: float = GAP_TIMEOUT) -> tuple[Inbox[int], Counter[str]]:
    counters: Counter[str] = Counter()
    return Inbox(gap_timeout, max_held, counters), counters


def _send(outbox: Outbox[str], channel: str, now: float) -> str:
    """Number one item like BusClient.publish does and record it; the item names itself."""
    seq = outbox.next_seq(channel)
    item = f"{channel}#{seq}"
    outbox.record(channel, seq, item, now)
    return item


def _feed(inbox: Inbox[int], stream: tuple[bytes, str], seqs: list[int], now: float = 0.0) -> list[int]:
    out: list[int] = []
    for seq in seqs:
        out.extend(inbox.accept(stream, seq, seq, now))
    return out


# --------------------------------------------------------------------------- Outbox


def test_numbering_starts_at_one_per_channel_and_channels_are_independent() -> None:
    outbox, _ = _outbox()
    assert [outbox.next_seq("x") for _ in range(3)] == [1, 2, 3]
    assert outbox.next_seq("y") == 1
    assert outbox.next_seq("x") == 4
    assert outbox.next_seq("y") == 2
    assert outbox.next_seq("z") == 1


def test_numbering_does_not_depend_on_acks() -> None:
    outbox, _ = _outbox()
    for _ in range(3):
        _send(outbox, "x", 0.0)
    outbox.ack("x", 3)
    assert outbox.next_seq("x") == 4


def test_record_keeps_items_until_acked() -> None:
    outbox, _ = _outbox()
    for _ in range(5):
        _send(outbox, "x", 0.0)
    assert outbox.unacked_count() == 5
    assert outbox.to_resend(1.0) == [f"x#{n}" for n in range(1, 6)]


def test_ack_drops_everything_up_to_seq_and_nothing_after() -> None:
    outbox, _ = _outbox()
    for _ in range(5):
        _send(outbox, "x", 0.0)
    outbox.ack("x", 3)
    assert outbox.unacked_count() == 2
    assert outbox.to_resend(1.0) == ["x#4", "x#5"]
    outbox.ack("x", 5)
    assert outbox.unacked_count() == 0
    assert outbox.to_resend(2.0) == []


def test_ack_is_per_channel() -> None:
    outbox, _ = _outbox()
    for _ in range(3):
        _send(outbox, "x", 0.0)
        _send(outbox, "y", 0.0)
    outbox.ack("x", 3)
    assert outbox.to_resend(1.0) == ["y#1", "y#2", "y#3"]


def test_ack_of_unknown_channel_old_seq_or_twice_is_harmless() -> None:
    outbox, _ = _outbox()
    for _ in range(3):
        _send(outbox, "x", 0.0)
    outbox.ack("nope", 10)
    outbox.ack("x", 0)
    assert outbox.unacked_count() == 3
    outbox.ack("x", 2)
    outbox.ack("x", 2)
    outbox.ack("x", 1)  # an older ack after a newer one (a heartbeat of a restarted broadcaster)
    assert outbox.to_resend(1.0) == ["x#3"]


def test_ack_beyond_everything_sent_empties_the_channel() -> None:
    outbox, _ = _outbox()
    for _ in range(3):
        _send(outbox, "x", 0.0)
    outbox.ack("x", 10**6)
    assert outbox.unacked_count() == 0


def test_to_resend_returns_a_channels_items_in_send_order() -> None:
    outbox, _ = _outbox()
    for n in range(10):
        _send(outbox, "x", float(n))
    assert outbox.to_resend(100.0) == [f"x#{n}" for n in range(1, 11)]


def test_to_resend_keeps_send_order_within_each_channel() -> None:
    outbox, _ = _outbox()
    _send(outbox, "x", 0.0)
    _send(outbox, "y", 1.0)
    _send(outbox, "x", 2.0)
    assert outbox.to_resend(10.0) == ["x#1", "x#2", "y#1"]


def test_to_resend_with_a_delay_returns_only_older_items_and_restarts_their_clock() -> None:
    outbox, counters = _outbox()
    _send(outbox, "x", 0.0)   # x#1
    _send(outbox, "x", 0.5)   # x#2
    _send(outbox, "y", 0.25)  # y#1
    _send(outbox, "x", 0.9)   # x#3
    assert outbox.to_resend(1.0, older_than=0.75) == ["x#1", "y#1"]
    assert counters["frames_resent"] == 2
    # Resent just now: not older than the delay any more; x#2 now is.
    assert outbox.to_resend(1.3, older_than=0.75) == ["x#2"]
    assert counters["frames_resent"] == 3
    # The delay is inclusive (>=).
    assert outbox.to_resend(1.75, older_than=0.75) == ["x#1", "x#3", "y#1"]
    assert counters["frames_resent"] == 6
    # Resending keeps the items: only an ack removes them.
    assert outbox.unacked_count() == 4


def test_to_resend_without_delay_returns_all_and_counts_them() -> None:
    outbox, counters = _outbox()
    for n in range(4):
        _send(outbox, "x", float(n))
    assert len(outbox.to_resend(4.0)) == 4
    assert len(outbox.to_resend(4.0)) == 4
    assert counters["frames_resent"] == 8
    assert outbox.unacked_count() == 4


def test_to_resend_of_nothing_counts_nothing() -> None:
    outbox, counters = _outbox()
    assert outbox.to_resend(0.0) == []
    _send(outbox, "x", 0.0)
    assert outbox.to_resend(0.1, older_than=1.0) == []
    assert counters["frames_resent"] == 0


def test_max_unacked_bound_drops_the_oldest_and_counts_it() -> None:
    outbox, counters = _outbox(max_unacked=3)
    for n in range(3):
        _send(outbox, "x", float(n))
    assert counters["frames_unrecoverable"] == 0
    _send(outbox, "x", 3.0)
    assert outbox.unacked_count() == 3
    assert counters["frames_unrecoverable"] == 1
    assert outbox.to_resend(10.0) == ["x#2", "x#3", "x#4"]
    _send(outbox, "x", 11.0)
    _send(outbox, "x", 12.0)
    assert counters["frames_unrecoverable"] == 3
    assert outbox.to_resend(20.0) == ["x#4", "x#5", "x#6"]


def test_max_unacked_bound_drops_the_oldest_across_channels() -> None:
    outbox, counters = _outbox(max_unacked=3)
    _send(outbox, "y", 0.0)  # y#1, the oldest
    _send(outbox, "x", 1.0)
    _send(outbox, "x", 2.0)
    _send(outbox, "x", 3.0)  # over the bound: y#1 goes
    assert counters["frames_unrecoverable"] == 1
    assert sorted(outbox.to_resend(10.0)) == ["x#1", "x#2", "x#3"]
    _send(outbox, "y", 11.0)  # y#2; the oldest now is x#1 (all resent at 10.0, x first)
    assert counters["frames_unrecoverable"] == 2
    assert outbox.unacked_count() == 3


def test_acks_make_room_under_the_bound() -> None:
    outbox, counters = _outbox(max_unacked=2)
    for seq in range(1, 11):
        _send(outbox, "x", 0.0)
        outbox.ack("x", seq)
    assert counters["frames_unrecoverable"] == 0
    assert outbox.unacked_count() == 0


# --------------------------------------------------------------------------- Inbox


def test_in_order_frames_are_delivered_at_once() -> None:
    inbox, counters = _inbox()
    for seq in range(1, 11):
        assert inbox.accept(A, seq, seq, 0.0) == [seq]
    assert counters["duplicates_dropped"] == 0
    assert counters["gaps"] == 0


def test_first_frame_of_an_unknown_stream_starts_the_stream() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 41, 41, 0.0) == [41]
    assert inbox.accept(A, 42, 42, 0.0) == [42]
    # Frames sent before this receiver heard the sender are not waited for...
    assert inbox.expire(100.0) == []
    assert counters["gaps"] == 0
    # ...and when they come late they count as duplicates, never delivered.
    assert inbox.accept(A, 40, 40, 0.0) == []
    assert counters["duplicates_dropped"] == 1


def test_duplicates_before_and_after_delivery_are_dropped_and_counted() -> None:
    inbox, counters = _inbox()
    assert _feed(inbox, A, [1, 2]) == [1, 2]
    assert inbox.accept(A, 2, 2, 0.0) == []  # after delivery
    assert inbox.accept(A, 1, 1, 0.0) == []
    assert counters["duplicates_dropped"] == 2
    assert inbox.accept(A, 4, 4, 0.0) == []  # held
    assert inbox.accept(A, 4, 4, 0.0) == []  # duplicate of a held frame, before delivery
    assert counters["duplicates_dropped"] == 3
    assert inbox.accept(A, 3, 3, 0.0) == [3, 4]
    assert inbox.accept(A, 4, 4, 0.0) == []
    assert counters["duplicates_dropped"] == 4


def test_a_duplicate_keeps_the_first_copy() -> None:
    inbox: Inbox[str] = Inbox(GAP_TIMEOUT, 100, Counter())
    assert inbox.accept(A, 1, "1a", 0.0) == ["1a"]
    assert inbox.accept(A, 3, "3a", 0.0) == []
    assert inbox.accept(A, 3, "3b", 0.0) == []
    assert inbox.accept(A, 2, "2a", 0.0) == ["2a", "3a"]


def test_early_frames_wait_for_the_gap_then_are_released_in_order() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 1, 1, 0.0) == [1]
    assert _feed(inbox, A, [5, 3, 4]) == []
    assert inbox.accept(A, 2, 2, 1.0) == [2, 3, 4, 5]
    assert inbox.accept(A, 6, 6, 1.0) == [6]
    assert counters["gaps"] == 0
    assert counters["frames_lost"] == 0
    assert inbox.expire(100.0) == []


def test_partial_fill_releases_up_to_the_next_gap() -> None:
    inbox, _ = _inbox()
    _feed(inbox, A, [1, 3, 5, 6])
    assert inbox.accept(A, 2, 2, 0.0) == [2, 3]
    assert inbox.accept(A, 4, 4, 0.0) == [4, 5, 6]


def test_expire_before_gap_timeout_releases_nothing() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 3], now=10.0)
    assert inbox.expire(10.0 + GAP_TIMEOUT - 0.01) == []
    assert counters["gaps"] == 0


def test_expire_after_gap_timeout_skips_the_gap_counts_it_and_logs_it() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 2], now=10.0)
    _feed(inbox, A, [6, 5], now=10.0)
    assert inbox.expire(10.0 + GAP_TIMEOUT) == [5, 6]
    assert counters["gaps"] == 1
    assert counters["frames_lost"] == 2  # 3 and 4
    assert list(inbox.gap_log) == [(A, 3, 4)]
    # The skipped frames, should they come after all, are duplicates now.
    assert inbox.accept(A, 3, 3, 20.0) == []
    assert counters["duplicates_dropped"] == 1
    assert inbox.accept(A, 7, 7, 20.0) == [7]


def test_the_gap_clock_starts_at_the_first_early_frame() -> None:
    inbox, counters = _inbox()
    inbox.accept(A, 1, 1, 0.0)
    inbox.accept(A, 3, 3, 1.0)
    inbox.accept(A, 4, 4, 4.0)  # a later early frame does not restart the clock
    assert inbox.expire(1.0 + GAP_TIMEOUT) == [3, 4]
    assert counters["gaps"] == 1


def test_a_frame_waits_gap_timeout_from_its_own_arrival() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 3], now=0.0)
    inbox.accept(A, 5, 5, 4.0)
    assert inbox.accept(A, 2, 2, 4.5) == [2, 3]  # 5 has waited for 4 since it arrived at 4.0
    assert inbox.expire(4.0 + GAP_TIMEOUT - 0.01) == []
    assert inbox.expire(4.0 + GAP_TIMEOUT) == [5]
    assert counters["gaps"] == 1
    assert counters["frames_lost"] == 1
    assert list(inbox.gap_log) == [(A, 4, 4)]


def test_expire_gives_up_on_every_gap_that_waited_gap_timeout() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 3, 5], now=0.0)
    assert inbox.expire(GAP_TIMEOUT) == [3, 5]
    assert counters["gaps"] == 2


def test_expire_handles_each_stream_on_its_own_clock() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 3], now=0.0)
    _feed(inbox, B, [1, 3], now=3.0)
    assert inbox.expire(GAP_TIMEOUT) == [3]
    assert inbox.expire(3.0 + GAP_TIMEOUT) == [3]
    assert counters["gaps"] == 2
    assert list(inbox.gap_log) == [(A, 2, 2), (B, 2, 2)]


def test_max_held_overflow_skips_the_gap_at_once() -> None:
    inbox, counters = _inbox(max_held=3)
    inbox.accept(A, 1, 1, 0.0)
    assert _feed(inbox, A, [4, 5, 6]) == []  # 3 held: at the bound, still waiting
    assert counters["gaps"] == 0
    assert inbox.accept(A, 7, 7, 0.0) == [4, 5, 6, 7]  # the 4th held frame: give up on 2..3
    assert counters["gaps"] == 1
    assert counters["frames_lost"] == 2
    assert list(inbox.gap_log) == [(A, 2, 3)]
    assert inbox.expire(100.0) == []


def test_max_held_overflow_with_several_gaps_skips_only_the_first() -> None:
    inbox, counters = _inbox(max_held=2)
    inbox.accept(A, 1, 1, 0.0)
    _feed(inbox, A, [3, 5])
    assert inbox.accept(A, 6, 6, 0.0) == [3]
    assert counters["gaps"] == 1
    assert inbox.accept(A, 4, 4, 0.0) == [4, 5, 6]


def test_streams_are_independent_per_origin_and_channel() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 1, 1, 0.0) == [1]
    assert inbox.accept(B, 1, 1, 0.0) == [1]  # same seq, other origin: not a duplicate
    assert inbox.accept(A_OTHER_CHANNEL, 1, 1, 0.0) == [1]  # same origin, other channel
    assert inbox.accept(A, 3, 3, 0.0) == []
    assert inbox.accept(B, 2, 2, 0.0) == [2]  # A's gap does not hold B back
    assert inbox.accept(A_OTHER_CHANNEL, 2, 2, 0.0) == [2]
    assert counters["duplicates_dropped"] == 0
    assert inbox.accept(A, 2, 2, 0.0) == [2, 3]


def test_forget_makes_the_next_frame_start_the_stream_again() -> None:
    inbox, _ = _inbox()
    _feed(inbox, A, [1, 2, 3])
    inbox.forget(A)
    assert inbox.accept(A, 1, 1, 0.0) == [1]
    inbox.forget((b"nobody", "x"))  # forgetting an unknown stream is harmless


# --------------------------------------------------------------------------- properties


@st.composite
def _arrivals_without_loss(draw: Any) -> tuple[int, list[int]]:
    """1..n arriving in any order with duplicates and late frames; 1 first (it starts the stream)."""
    n = draw(st.integers(1, 60))
    rest = draw(st.permutations(list(range(2, n + 1))))
    late = draw(st.sets(st.sampled_from(rest))) if rest else set()
    order = [s for s in rest if s not in late] + [s for s in rest if s in late]
    duplicates = draw(st.lists(st.tuples(st.integers(1, n), st.integers(0, len(order))), max_size=40))
    for seq, pos in duplicates:
        order.insert(pos, seq)
    return n, [1, *order]


@settings(max_examples=300, deadline=None)
@given(_arrivals_without_loss(), st.randoms(use_true_random=False))
def test_property_any_order_with_duplicates_delivers_exactly_1_to_n(
    arrival: tuple[int, list[int]], rnd: random.Random
) -> None:
    n, order = arrival
    inbox, counters = _inbox(max_held=n + 1)
    # Every frame arrives before gap_timeout; expire() runs between arrivals as the client's ticker does.
    times = sorted(rnd.uniform(0.0, GAP_TIMEOUT * 0.99) for _ in order)
    out: list[int] = []
    for seq, now in zip(order, times, strict=True):
        out.extend(inbox.accept(A, seq, seq, now))
        out.extend(inbox.expire(now))
    assert out == list(range(1, n + 1))
    assert counters["gaps"] == 0
    assert counters["frames_lost"] == 0
    assert counters["duplicates_dropped"] == len(order) - n


def _expected_losses(kept: set[int]) -> tuple[int, int]:
    """(gaps, frames lost) below the highest kept seq: runs of missing numbers and their total."""
    top = max(kept)
    missing = [s for s in range(1, top) if s not in kept]
    runs = sum(1 for s in missing if s - 1 in kept)
    return runs, len(missing)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_with_lost_frames_output_is_increasing_unique_and_losses_are_counted(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 60))
    lost = data.draw(st.sets(st.integers(2, n))) if n > 1 else set()
    kept = set(range(1, n + 1)) - lost
    rest = data.draw(st.permutations(sorted(kept - {1})))
    duplicates = data.draw(st.lists(st.tuples(st.sampled_from(sorted(kept)), st.integers(0, len(rest)))))
    order = list(rest)
    for seq, pos in duplicates:
        order.insert(pos, seq)
    order = [1, *order]

    inbox, counters = _inbox(max_held=n + 1)
    out: list[int] = []
    for seq in order:
        out.extend(inbox.accept(A, seq, seq, 0.0))
    # Each expire() gives up on (at least) one gap that waited gap_timeout; bounded loop.
    now = 0.0
    for _ in range(n + 1):
        now += GAP_TIMEOUT
        out.extend(inbox.expire(now))
    assert out == sorted(kept)
    assert len(out) == len(set(out))
    gaps, frames_lost = _expected_losses(kept)
    assert counters["gaps"] == gaps
    assert counters["frames_lost"] == frames_lost
    assert counters["duplicates_dropped"] == len(duplicates)
    assert len(inbox.gap_log) == min(gaps, 100)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 80),
    channels=st.integers(1, 3),
    loss=st.floats(0.0, 0.9),
    rnd=st.randoms(use_true_random=False),
)
def test_property_outbox_and_inbox_over_a_lossy_channel_deliver_everything_once_in_order(
    n: int, channels: int, loss: float, rnd: random.Random
) -> None:
    """A sender's Outbox, a lossy path, a broadcaster acking what it published, a receiver's Inbox.

    The broadcaster acknowledges per channel the highest seq up to which it
    has published everything (a frame it never got is never acknowledged).
    Frames are lost at random on the way; duplicates come from resends. At
    the end the sender resends everything unacknowledged until none is left.
    """
    counters: Counter[str] = Counter()
    outbox: Outbox[tuple[str, int]] = Outbox(10 * n * channels, counters)
    inbox: Inbox[tuple[str, int]] = Inbox(GAP_TIMEOUT, 10 * n * channels, counters)
    origin = b"s" * 16
    published: dict[str, set[int]] = {f"c{c}": set() for c in range(channels)}
    delivered: dict[str, list[int]] = {ch: [] for ch in published}
    now = 0.0

    def transmit(item: tuple[str, int]) -> None:
        channel, seq = item
        if rnd.random() < loss:
            return  # lost between sender and broadcaster, or broadcaster and receiver
        published[channel].add(seq)
        for ready in inbox.accept((origin, channel), seq, item, now):
            delivered[ready[0]].append(ready[1])

    def heartbeat() -> None:
        for channel, seqs in published.items():
            contiguous = 0
            while contiguous + 1 in seqs:
                contiguous += 1
            outbox.ack(channel, contiguous)

    # The stream starts at seq 1: the receiver is subscribed before the first frame.
    sent: Counter[str] = Counter()
    for _ in range(n):
        channel = f"c{rnd.randrange(channels)}"
        seq = outbox.next_seq(channel)
        item = (channel, seq)
        outbox.record(channel, seq, item, now)
        sent[channel] += 1
        if seq == 1:
            published[channel].add(seq)
            delivered[channel].extend(s for _c, s in inbox.accept((origin, channel), seq, item, now))
        else:
            transmit(item)
        now += 0.001
        if rnd.random() < 0.2:
            heartbeat()
    for _ in range(1000):
        heartbeat()
        pending = outbox.to_resend(now)
        if not pending:
            break
        for item in pending:
            transmit(item)
        now += 0.001
    assert outbox.unacked_count() == 0
    assert now < GAP_TIMEOUT  # nothing was given up on: every gap was filled by a resend
    for channel, seqs in delivered.items():
        assert seqs == list(range(1, sent[channel] + 1))
    assert counters["gaps"] == 0
    assert counters["frames_unrecoverable"] == 0


# --------------------------------------------------------------------------- with the broadcaster's acks


class _FakePub:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

        self._message: list[bytes] = []

    def send_multipart(self, parts: list[bytes]) -> None:
        self.sent.append(list(parts))

    def send(self, part: bytes, flags: int = 0) -> None:  # fastzmq.send_parts, part by part
        self._message.append(part)
        if not flags & fastzmq.SNDMORE:
            self.sent.append(self._message)
            self._message = []


def _heartbeat_acks(broadcaster: Broadcaster) -> dict[str, int]:
    pub = _FakePub()
    broadcaster._heartbeat(pub, 0.0)  # type: ignore[arg-type]
    frame = wire.decode(pub.sent[-1], 1 << 20)
    assert frame.channel == wire.HEARTBEAT_CHANNEL
    acks: dict[str, int] = frame.payload["acks"]
    return acks


def _apply_acks(outbox: Outbox[Any], origin: bytes, acks: dict[str, int]) -> None:
    """What BusClient._on_heartbeat does with a heartbeat's acks."""
    mine = origin.hex() + "/"
    for key, seq in acks.items():
        if key.startswith(mine):
            outbox.ack(key[len(mine):], seq)


def test_broadcaster_acks_what_it_published_and_refuses_garbage(tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    pub = _FakePub()
    origin = b"w" * 16
    outbox: Outbox[list[bytes]] = Outbox(100, Counter())
    for _ in range(3):
        seq = outbox.next_seq("sio:socketio")
        parts = wire.encode(wire.Frame("sio:socketio", origin, seq, {"n": seq}), 1 << 20)
        outbox.record("sio:socketio", seq, parts, 0.0)
        broadcaster.relay(parts, pub)  # type: ignore[arg-type]
    broadcaster.relay([b"garbage"], pub)  # type: ignore[arg-type]
    forged = wire.encode(wire.Frame(wire.HEARTBEAT_CHANNEL, origin, 99, {"acks": {}}), 1 << 20)
    broadcaster.relay(forged, pub)  # type: ignore[arg-type]
    assert len(pub.sent) == 3
    assert broadcaster.counters["frames_refused"] == 2
    _apply_acks(outbox, origin, _heartbeat_acks(broadcaster))
    assert outbox.unacked_count() == 0


def test_a_frame_the_broadcaster_never_got_is_not_acked_by_a_later_one(tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    pub = _FakePub()
    origin = b"w" * 16
    outbox: Outbox[list[bytes]] = Outbox(100, Counter())
    for _ in range(3):
        seq = outbox.next_seq("sio:socketio")
        parts = wire.encode(wire.Frame("sio:socketio", origin, seq, {"n": seq}), 1 << 20)
        outbox.record("sio:socketio", seq, parts, 0.0)
        if seq != 2:  # frame 2 never reaches the broadcaster (e.g. zmq.Again on a full PUSH queue)
            broadcaster.relay(parts, pub)  # type: ignore[arg-type]
    _apply_acks(outbox, origin, _heartbeat_acks(broadcaster))
    resent = outbox.to_resend(10.0)
    # 2 is resent; so is 3 (acks are cumulative: the broadcaster acknowledges
    # up to its first hole), which receivers then drop as a duplicate.
    assert [wire.decode(p, 1 << 20).seq for p in resent] == [2, 3]


def test_peeking_a_number_does_not_take_it() -> None:
    outbox: Outbox[str] = Outbox(10, Counter())
    assert outbox.peek_seq("x") == outbox.peek_seq("x") == 1
    assert outbox.next_seq("x") == 1
    assert outbox.peek_seq("x") == 2
