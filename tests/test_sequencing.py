"""Unit and property tests of the sans-io sequencing layer (gunicorn_barrel.bus.sequencing).

No sockets: ``Outbox`` numbers and keeps what a sender pushed until it is
acknowledged, ``Inbox`` delivers each (origin, channel) stream in order,
exactly once, and counts what it had to give up on.
"""
from __future__ import annotations

import dataclasses
import random
import tempfile
import types
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.sequencing import FirstUnacked, Inbox, Numbering, Outbox, SeqTracker, Unacked
from gunicorn_barrel.bus.zeromq import broadcaster as broadcaster_module
from gunicorn_barrel.bus.zeromq import fastzmq
from gunicorn_barrel.bus.zeromq.broadcaster import Broadcaster
from gunicorn_barrel.bus.zeromq.protocol import RESEND_AFTER, ClientProtocol, SenderProtocol

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
    """Frames of a sender that had nothing acknowledged yet (base 1); each item is its seq."""
    out: list[int] = []
    for seq in seqs:
        out.extend(inbox.accept(stream, seq, 1, seq, now))
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
        assert inbox.accept(A, seq, 1, seq, 0.0) == [seq]
    assert counters["duplicates_dropped"] == 0
    assert counters["gaps"] == 0


def test_an_unknown_stream_starts_at_the_base_of_its_first_frame() -> None:
    inbox, counters = _inbox()
    # Everything below 41 was acknowledged to the sender: published before we subscribed.
    assert inbox.accept(A, 41, 41, 41, 0.0) == [41]
    assert inbox.accept(A, 42, 41, 42, 0.0) == [42]
    assert inbox.expire(100.0) == []
    assert counters["gaps"] == 0
    # An acknowledged frame never comes again; should a copy come, it is a duplicate.
    assert inbox.accept(A, 40, 40, 40, 0.0) == []
    assert counters["duplicates_dropped"] == 1


def test_a_lost_first_frame_sent_again_is_delivered_first() -> None:
    inbox, counters = _inbox()
    # Frame 1 was lost on the way to the broadcaster: 2 arrives first, saying 1 is not acknowledged.
    assert inbox.accept(A, 2, 1, 2, 0.0) == []
    assert inbox.accept(A, 3, 1, 3, 0.0) == []
    assert inbox.accept(A, 1, 1, 1, 1.0) == [1, 2, 3]  # the sender's resend
    assert (counters["duplicates_dropped"], counters["gaps"]) == (0, 0)


def test_first_frames_published_before_we_subscribed_are_skipped_uncounted_once_published() -> None:
    inbox, counters = _inbox()
    # 5 and 6 were sent but not acknowledged when 7 went: published before we subscribed, or not yet.
    assert inbox.accept(A, 7, 5, 7, 0.0) == []
    assert inbox.waiting() == [A]
    assert inbox.published(A, 4, 7) == []  # the broadcaster has not published 5 yet: it will come
    assert inbox.published(A, 7, 7) == [7]  # it had: 5 and 6 went out before we subscribed
    assert inbox.waiting() == []  # caught up
    assert counters["frames_before_subscribe"] == 2
    assert (counters["gaps"], counters["frames_lost"]) == (0, 0)
    assert inbox.accept(A, 8, 8, 8, 0.0) == [8]


def test_published_skips_only_up_to_where_it_was_published_and_keeps_what_came() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 8, 3, 8, 0.0) == []
    assert inbox.accept(A, 4, 3, 4, 0.0) == []
    assert inbox.published(A, 5, 8) == [4]  # 3 and 5 went out before we subscribed; 6 and 7 did not
    assert counters["frames_before_subscribe"] == 2
    assert inbox.accept(A, 7, 3, 7, 0.0) == []
    assert inbox.accept(A, 6, 3, 6, 0.0) == [6, 7, 8]
    assert counters["gaps"] == 0


def test_a_first_frame_that_was_a_resent_copy_skips_what_went_out_after_it_before_we_subscribed() -> None:
    inbox, counters = _inbox()
    # 16 was resent (its first copy went out before we subscribed, so did 17..22): its copy came first.
    assert inbox.accept(A, 16, 16, 16, 0.0) == [16]
    assert inbox.published(A, 22, 22) == []
    assert counters["frames_before_subscribe"] == 6
    assert inbox.accept(A, 19, 16, 19, 0.0) == []  # another late copy
    assert inbox.accept(A, 23, 17, 23, 0.0) == [23]
    assert (counters["duplicates_dropped"], counters["gaps"]) == (1, 0)


def test_once_caught_up_a_published_frame_that_never_came_is_a_gap_at_once() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 5, 5, 5, 0.0) == [5]
    assert inbox.published(A, 5, 5) == []
    assert inbox.waiting() == []
    assert inbox.accept(A, 7, 5, 7, 0.0) == []
    assert inbox.waiting() == [A]
    assert inbox.published(A, 6, 7) == [7]  # 6 was published while we listened: lost on the way
    assert (counters["gaps"], counters["frames_lost"], counters["frames_before_subscribe"]) == (1, 1, 0)
    assert list(inbox.gap_log) == [(A, 6, 6)]


def test_missing_first_frames_never_settled_are_a_counted_gap_after_the_timeout() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 4, 2, 4, 0.0) == []
    assert inbox.expire(GAP_TIMEOUT - 0.01) == []
    assert inbox.expire(GAP_TIMEOUT) == [4]
    assert (counters["gaps"], counters["frames_lost"]) == (1, 2)
    assert list(inbox.gap_log) == [(A, 2, 3)]


def test_a_base_above_or_at_the_seq_or_missing_starts_at_the_frame() -> None:
    for base in (0, 9, 10):
        inbox, _ = _inbox()
        assert inbox.accept(A, 9, base, 9, 0.0) == [9]


def test_forget_drops_a_waiting_stream() -> None:
    inbox, _ = _inbox()
    inbox.accept(A, 3, 1, 3, 0.0)
    inbox.forget(A)
    assert inbox.waiting() == []
    assert inbox.published(A, 10, 10) == []


def test_what_went_out_before_we_subscribed_is_told_by_the_first_news_of_the_stream() -> None:
    inbox, counters = _inbox()
    # Before we subscribed: 2, 4..7 were published, 1 and 3 lost on the way (then resent).
    assert inbox.accept(A, 1, 1, 1, 0.0) == [1]
    assert inbox.published(A, 2, 7) == []  # 2 went out before; so may have anything up to 7
    assert inbox.accept(A, 9, 1, 9, 0.0) == []
    assert inbox.accept(A, 3, 3, 3, 0.0) == [3]
    assert inbox.published(A, 7, 9) == []  # 4..7: published before we subscribed, not lost
    assert (counters["frames_before_subscribe"], counters["gaps"]) == (5, 0)
    assert inbox.published(A, 9, 9) == [9]  # 8 was published after: lost on the way to us
    assert (counters["gaps"], counters["frames_lost"]) == (1, 1)


def test_duplicates_before_and_after_delivery_are_dropped_and_counted() -> None:
    inbox, counters = _inbox()
    assert _feed(inbox, A, [1, 2]) == [1, 2]
    assert inbox.accept(A, 2, 1, 2, 0.0) == []  # after delivery
    assert inbox.accept(A, 1, 1, 1, 0.0) == []
    assert counters["duplicates_dropped"] == 2
    assert inbox.accept(A, 4, 1, 4, 0.0) == []  # held
    assert inbox.accept(A, 4, 1, 4, 0.0) == []  # duplicate of a held frame, before delivery
    assert counters["duplicates_dropped"] == 3
    assert inbox.accept(A, 3, 1, 3, 0.0) == [3, 4]
    assert inbox.accept(A, 4, 1, 4, 0.0) == []
    assert counters["duplicates_dropped"] == 4


def test_a_duplicate_keeps_the_first_copy() -> None:
    inbox: Inbox[str] = Inbox(GAP_TIMEOUT, 100, Counter())
    assert inbox.accept(A, 1, 1, "1a", 0.0) == ["1a"]
    assert inbox.accept(A, 3, 1, "3a", 0.0) == []
    assert inbox.accept(A, 3, 1, "3b", 0.0) == []
    assert inbox.accept(A, 2, 1, "2a", 0.0) == ["2a", "3a"]


def test_early_frames_wait_for_the_gap_then_are_released_in_order() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 1, 1, 1, 0.0) == [1]
    assert _feed(inbox, A, [5, 3, 4]) == []
    assert inbox.accept(A, 2, 1, 2, 1.0) == [2, 3, 4, 5]
    assert inbox.accept(A, 6, 1, 6, 1.0) == [6]
    assert counters["gaps"] == 0
    assert counters["frames_lost"] == 0
    assert inbox.expire(100.0) == []


def test_partial_fill_releases_up_to_the_next_gap() -> None:
    inbox, _ = _inbox()
    _feed(inbox, A, [1, 3, 5, 6])
    assert inbox.accept(A, 2, 1, 2, 0.0) == [2, 3]
    assert inbox.accept(A, 4, 1, 4, 0.0) == [4, 5, 6]


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
    assert inbox.accept(A, 3, 1, 3, 20.0) == []
    assert counters["duplicates_dropped"] == 1
    assert inbox.accept(A, 7, 1, 7, 20.0) == [7]


def test_the_gap_clock_starts_at_the_first_early_frame() -> None:
    inbox, counters = _inbox()
    inbox.accept(A, 1, 1, 1, 0.0)
    inbox.accept(A, 3, 1, 3, 1.0)
    inbox.accept(A, 4, 1, 4, 4.0)  # a later early frame does not restart the clock
    assert inbox.expire(1.0 + GAP_TIMEOUT) == [3, 4]
    assert counters["gaps"] == 1


def test_a_frame_waits_gap_timeout_from_its_own_arrival() -> None:
    inbox, counters = _inbox()
    _feed(inbox, A, [1, 3], now=0.0)
    inbox.accept(A, 5, 1, 5, 4.0)
    assert inbox.accept(A, 2, 1, 2, 4.5) == [2, 3]  # 5 has waited for 4 since it arrived at 4.0
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
    inbox.accept(A, 1, 1, 1, 0.0)
    assert _feed(inbox, A, [4, 5, 6]) == []  # 3 held: at the bound, still waiting
    assert counters["gaps"] == 0
    assert inbox.accept(A, 7, 1, 7, 0.0) == [4, 5, 6, 7]  # the 4th held frame: give up on 2..3
    assert counters["gaps"] == 1
    assert counters["frames_lost"] == 2
    assert list(inbox.gap_log) == [(A, 2, 3)]
    assert inbox.expire(100.0) == []


def test_max_held_overflow_with_several_gaps_skips_only_the_first() -> None:
    inbox, counters = _inbox(max_held=2)
    inbox.accept(A, 1, 1, 1, 0.0)
    _feed(inbox, A, [3, 5])
    assert inbox.accept(A, 6, 1, 6, 0.0) == [3]
    assert counters["gaps"] == 1
    assert inbox.accept(A, 4, 1, 4, 0.0) == [4, 5, 6]


def test_streams_are_independent_per_origin_and_channel() -> None:
    inbox, counters = _inbox()
    assert inbox.accept(A, 1, 1, 1, 0.0) == [1]
    assert inbox.accept(B, 1, 1, 1, 0.0) == [1]  # same seq, other origin: not a duplicate
    assert inbox.accept(A_OTHER_CHANNEL, 1, 1, 1, 0.0) == [1]  # same origin, other channel
    assert inbox.accept(A, 3, 1, 3, 0.0) == []
    assert inbox.accept(B, 2, 1, 2, 0.0) == [2]  # A's gap does not hold B back
    assert inbox.accept(A_OTHER_CHANNEL, 2, 1, 2, 0.0) == [2]
    assert counters["duplicates_dropped"] == 0
    assert inbox.accept(A, 2, 1, 2, 0.0) == [2, 3]


def test_forget_makes_the_next_frame_start_the_stream_again() -> None:
    inbox, _ = _inbox()
    _feed(inbox, A, [1, 2, 3])
    inbox.forget(A)
    assert inbox.accept(A, 1, 1, 1, 0.0) == [1]
    inbox.forget((b"nobody", "x"))  # forgetting an unknown stream is harmless


def test_a_stream_silent_for_forget_after_is_forgotten_and_its_next_frame_delivered() -> None:
    inbox, counters = _inbox()
    B = (b"other", "sio:socketio")
    _feed(inbox, A, [1, 2, 3], now=0.0)
    _feed(inbox, B, [1, 2], now=100.0)
    assert inbox.expire(inbox.forget_after - 1) == [] and inbox.stream_count() == 2
    inbox.expire(inbox.forget_after)  # A silent long enough, B not
    assert inbox.stream_count() == 1
    # A speaks again: everything before was acknowledged, so its base is this frame.
    assert inbox.accept(A, 4, 4, 4, inbox.forget_after + 1) == [4]
    assert inbox.accept(B, 3, 1, 3, inbox.forget_after + 1) == [3]  # B was kept: in order
    assert counters["gaps"] == 0 and counters["duplicates_dropped"] == 0


def test_a_stream_holding_frames_back_is_not_forgotten_while_silent() -> None:
    inbox, counters = _inbox(gap_timeout=10 * Inbox.forget_after)
    _feed(inbox, A, [1, 3], now=0.0)  # 3 waits for 2
    inbox.expire(2 * Inbox.forget_after)
    assert inbox.stream_count() == 1
    assert inbox.accept(A, 2, 1, 2, 2 * Inbox.forget_after) == [2, 3]


# --------------------------------------------------------------------------- properties


@st.composite
def _arrivals_without_loss(draw: Any) -> tuple[int, list[int]]:
    """1..n (base 1: nothing acknowledged) arriving in any order, the first ones too, with
    duplicates and late frames."""
    n = draw(st.integers(1, 60))
    rest = draw(st.permutations(list(range(1, n + 1))))
    late = draw(st.sets(st.sampled_from(rest)))
    order = [s for s in rest if s not in late] + [s for s in rest if s in late]
    duplicates = draw(st.lists(st.tuples(st.integers(1, n), st.integers(1, len(order))), max_size=40))
    for seq, pos in duplicates:
        order.insert(pos, seq)
    return n, order


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
        out.extend(inbox.accept(A, seq, 1, seq, now))
        out.extend(inbox.expire(now))
    assert out == list(range(1, n + 1))
    assert counters["gaps"] == 0
    assert counters["frames_lost"] == 0
    assert counters["duplicates_dropped"] == len(order) - n


def _expected_losses(kept: set[int]) -> tuple[int, int]:
    """(gaps, frames lost) below the highest kept seq: runs of missing numbers and their total."""
    top = max(kept)
    missing = [s for s in range(1, top) if s not in kept]
    runs = sum(1 for s in missing if s == 1 or s - 1 in kept)
    return runs, len(missing)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_with_lost_frames_output_is_increasing_unique_and_losses_are_counted(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 60))
    # Any frame may be lost, the first ones too (base 1: the receiver knows the stream starts at 1).
    lost = data.draw(st.sets(st.integers(1, n), max_size=n - 1))
    kept = set(range(1, n + 1)) - lost
    order = list(data.draw(st.permutations(sorted(kept))))
    duplicates = data.draw(st.lists(st.tuples(st.sampled_from(sorted(kept)), st.integers(1, len(order)))))
    for seq, pos in duplicates:
        order.insert(pos, seq)

    inbox, counters = _inbox(max_held=n + 1)
    out: list[int] = []
    for seq in order:
        out.extend(inbox.accept(A, seq, 1, seq, 0.0))
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


# --------------------------------------------------------------------------- the zeromq bus, in memory
# The real sans-io halves of the bus: bus.zeromq.protocol.ClientProtocol (what BusClient does
# with frames and heartbeats; its sending half SenderProtocol is a LocalEmitter's) and the
# Broadcaster's relay() and heartbeat, sockets replaced by lists.


class _FakePub:
    """The broadcaster's PUB socket: what it publishes, in order."""

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

    def take(self) -> list[list[bytes]]:
        sent, self.sent = self.sent, []
        return sent


def _client(gap_timeout: float = GAP_TIMEOUT) -> ClientProtocol:
    return ClientProtocol(1 << 20, gap_timeout, 100_000, Counter())


def _heartbeat(broadcaster: Broadcaster, now: float = 0.0) -> wire.Frame:
    pub = _FakePub()
    broadcaster._heartbeat(pub, now)  # type: ignore[arg-type]
    frame = wire.decode(pub.sent[-1], 1 << 20)
    assert frame.channel == channels.HEARTBEAT
    return frame


def _relay(broadcaster: Broadcaster, parts: list[bytes]) -> list[list[bytes]]:
    pub = _FakePub()
    broadcaster.relay(parts, pub)  # type: ignore[arg-type]
    return pub.sent


def _seqs(frames: list[wire.Frame]) -> list[int]:
    return [frame.seq for frame in frames]


def test_broadcaster_acks_what_it_published_and_refuses_garbage(tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    sender = _client()
    published = [_relay(broadcaster, sender.frame("sio:socketio", {"n": n}, 0.0)) for n in range(3)]
    assert [len(p) for p in published] == [1, 1, 1]
    assert _relay(broadcaster, [b"garbage"]) == []
    forged = wire.encode(wire.Frame(channels.HEARTBEAT, sender.origin, 99, {"acks": {}}, base=1), 1 << 20)
    assert _relay(broadcaster, forged) == []
    assert broadcaster.counters["frames_refused"] == 2
    assert sender.outbox.unacked_count() == 3
    sender.heartbeat(_heartbeat(broadcaster), 0.0)
    assert sender.outbox.unacked_count() == 0


def test_a_frame_the_broadcaster_never_got_is_not_acked_by_a_later_one(tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    sender = _client()
    for n in range(1, 4):
        parts = sender.frame("sio:socketio", {"n": n}, 0.0)
        if n != 2:  # frame 2 never reaches the broadcaster (e.g. zmq.Again on a full PUSH queue)
            _relay(broadcaster, parts)
    sender.heartbeat(_heartbeat(broadcaster, RESEND_AFTER), RESEND_AFTER)
    resent = sender.stalled(RESEND_AFTER)
    # 2 is resent; so is 3 (acks are cumulative: the broadcaster acknowledges
    # up to its first hole), which receivers then drop as a duplicate.
    assert [wire.decode(p, 1 << 20).seq for p in resent] == [2, 3]


@pytest.mark.parametrize("lost", [[1], [1, 2], [1, 3]])
def test_lost_first_frames_are_not_acked_by_later_ones_and_reach_every_receiver(tmp_path: Any,
                                                                                lost: list[int]) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    sender, receiver = _client(), _client()
    delivered: list[wire.Frame] = []
    for n in range(1, 5):
        parts = sender.frame("sio:socketio", {"n": n}, 0.0)
        if n not in lost:
            for out in _relay(broadcaster, parts):
                delivered += receiver.received(wire.decode(out, 1 << 20), 0.0)
    beat = _heartbeat(broadcaster, 0.1)
    assert beat.payload["acks"][sender.origin.hex() + "/sio:socketio"] == 0
    sender.heartbeat(beat, 0.1)
    delivered += receiver.heartbeat(beat, 0.1)[1]
    assert delivered == []  # receivers wait for the lost first frames
    sender.heartbeat(beat, RESEND_AFTER)
    for parts in sender.stalled(RESEND_AFTER):
        for out in _relay(broadcaster, parts):
            delivered += receiver.received(wire.decode(out, 1 << 20), RESEND_AFTER)
    assert _seqs(delivered) == [1, 2, 3, 4]
    sender.heartbeat(_heartbeat(broadcaster), RESEND_AFTER)
    assert sender.outbox.unacked_count() == 0
    assert receiver.counters["gaps"] == 0


def test_a_new_broadcaster_gets_every_unacknowledged_frame_with_the_base_of_now(tmp_path: Any) -> None:
    first = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    sender = _client()
    frames = [sender.frame("c", {"n": n}, 0.0) for n in range(1, 5)]
    assert [wire.decode(p, 1 << 20).base for p in frames] == [1, 1, 1, 1]
    for parts in frames[:2]:
        _relay(first, parts)
    sender.heartbeat(_heartbeat(first), 0.0)  # 1 and 2 acknowledged; 3 and 4 died with the broadcaster
    second = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    resend, _ = sender.heartbeat(_heartbeat(second), 0.1)
    assert sender.counters["broadcaster_restarts_seen"] == 1
    assert [(f.seq, f.base) for f in (wire.decode(p, 1 << 20) for p in resend)] == [(3, 3), (4, 3)]
    for parts in resend:
        _relay(second, parts)
    sender.heartbeat(_heartbeat(second), 0.2)
    assert sender.outbox.unacked_count() == 0  # the new broadcaster did not wait for 1 and 2


def test_a_receiver_that_subscribed_late_skips_what_was_published_before_at_the_next_heartbeat(
        tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    sender, late = _client(), _client()
    for n in range(1, 4):
        _relay(broadcaster, sender.frame("c", {"n": n}, 0.0))  # before `late` subscribed
    published = _relay(broadcaster, sender.frame("c", {"n": 4}, 0.0))
    assert wire.decode(published[0], 1 << 20).base == 1  # nothing acknowledged yet
    assert late.received(wire.decode(published[0], 1 << 20), 0.0) == []
    _resend, ready = late.heartbeat(_heartbeat(broadcaster, 0.05), 0.05)
    assert _seqs(ready) == [4]
    assert late.counters["frames_before_subscribe"] == 3
    assert late.counters["gaps"] == 0


def test_streams_from_federation_links_are_in_the_heartbeat(tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    broadcaster._pub = _FakePub()  # type: ignore[assignment]
    broadcaster.federation = types.SimpleNamespace(  # type: ignore[assignment]
        forward=lambda *args: None, status=lambda now: [], queued=lambda: 0,
        acknowledge=lambda safe: None, received=lambda: {})
    remote = b"r" * 16
    parts = wire.encode(wire.Frame("sio:socketio", remote, 7, {"n": 7}, base=5), 1 << 20)
    broadcaster._from_link(parts, None)  # type: ignore[arg-type]
    assert broadcaster._pub.sent == [parts]  # type: ignore[attr-defined]
    assert _heartbeat(broadcaster).payload["acks"] == {remote.hex() + "/sio:socketio": 4}


def test_peeking_a_number_does_not_take_it() -> None:
    outbox: Outbox[str] = Outbox(10, Counter())
    assert outbox.peek_seq("x") == outbox.peek_seq("x") == 1
    assert outbox.next_seq("x") == 1
    assert outbox.peek_seq("x") == 2


def test_the_base_is_the_lowest_unacknowledged_seq_of_the_channel() -> None:
    outbox, _ = _outbox(max_unacked=3)
    assert outbox.base("x") == 1
    for _ in range(3):
        _send(outbox, "x", 0.0)
    assert (outbox.base("x"), outbox.base("y")) == (1, 1)
    outbox.ack("x", 2)
    assert outbox.base("x") == 3
    outbox.ack("x", 3)
    assert outbox.base("x") == 4  # nothing unacknowledged: the next frame's own seq
    for _ in range(4):
        _send(outbox, "x", 0.0)  # 4..7; 4 is dropped past the bound and will never be resent
    assert outbox.base("x") == 5


def test_first_unacked_follows_tickets_done_below_a_mark() -> None:
    first = FirstUnacked()
    assert first.base("x", 1, done_below=0) == 1
    for ticket, (channel, seq) in enumerate([("x", 1), ("y", 1), ("x", 2), ("x", 3)], start=10):
        first.sent(channel, seq, ticket)
    assert (first.base("x", 4, done_below=10), first.base("y", 2, done_below=10)) == (1, 1)
    assert first.base("x", 4, done_below=11) == 2  # x#1 done; y#1 (ticket 11) not yet
    assert first.base("y", 2, done_below=12) == 2
    assert first.base("x", 4, done_below=100) == 4


def test_a_hole_that_never_fills_is_acknowledged_past_at_the_bound(tmp_path: Any,
                                                                    monkeypatch: Any) -> None:
    # The sender dropped frame 2 (over its max_unacked): the broadcaster must not stop acknowledging.
    monkeypatch.setattr(broadcaster_module, "_MAX_AHEAD", 5)
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    origin = b"w" * 16
    key = origin.hex() + "/sio:socketio"
    for seq in [1, *range(3, 9)]:
        _relay(broadcaster, wire.encode(wire.Frame("sio:socketio", origin, seq, {"n": seq}, base=1), 1 << 20))
        assert _heartbeat(broadcaster).payload["acks"][key] == (1 if seq < 8 else 8)


def test_a_later_base_moves_the_acknowledgement_past_what_another_broadcaster_published(
        tmp_path: Any) -> None:
    broadcaster = Broadcaster(str(tmp_path), 1 << 20, parent_pid=0)
    origin = b"w" * 16
    key = origin.hex() + "/c"
    _relay(broadcaster, wire.encode(wire.Frame("c", origin, 6, {}, base=3), 1 << 20))
    assert _heartbeat(broadcaster).payload["acks"][key] == 2  # 3..5 may still come
    _relay(broadcaster, wire.encode(wire.Frame("c", origin, 7, {}, base=6), 1 << 20))
    assert _heartbeat(broadcaster).payload["acks"][key] == 7  # 3..5 were acknowledged meanwhile


@dataclasses.dataclass
class _Bus:
    """A send-only sender (a side process's LocalEmitter), a broadcaster that may restart,
    receivers (workers) that may join late: frames in memory."""

    tmp: str
    rnd: random.Random
    loss: float
    sender: SenderProtocol = dataclasses.field(default_factory=lambda: SenderProtocol(1 << 20, 100_000,
                                                                                         Counter()))
    receivers: list[ClientProtocol] = dataclasses.field(default_factory=list)
    delivered: dict[int, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    published_to: dict[int, set[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    published_before: dict[int, set[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    published: set[tuple[str, int]] = dataclasses.field(default_factory=set)
    in_flight: list[list[bytes]] = dataclasses.field(default_factory=list)  # sender -> broadcaster
    first_losses: Counter[str] = dataclasses.field(default_factory=Counter)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.broadcaster = Broadcaster(self.tmp, 1 << 20, parent_pid=0)

    def join(self) -> None:
        receiver = _client(gap_timeout=1e9)
        self.delivered[id(receiver)], self.published_to[id(receiver)] = [], set()
        self.published_before[id(receiver)] = set(self.published)
        self.receivers.append(receiver)

    def push(self, parts: list[bytes], lose: bool = False) -> None:
        if not lose and self.rnd.random() >= self.loss:
            self.in_flight.append(parts)

    def publish(self, channel: str, lose_first: int) -> None:
        parts = self.sender.frame(channel, {}, self.now)
        seq = wire.origin_and_seq(parts[1])[1]
        self.push(parts, lose=seq <= lose_first)

    def arrive(self) -> None:
        """The oldest frame in flight reaches the broadcaster, which publishes it to every receiver."""
        for out in _relay(self.broadcaster, self.in_flight.pop(0)):
            frame = wire.decode(out, 1 << 20)
            self.published.add((frame.channel, frame.seq))
            for receiver in self.receivers:
                self.published_to[id(receiver)].add((frame.channel, frame.seq))
                self._deliver(receiver, receiver.received(frame, self.now))

    def heartbeat(self) -> None:
        beat = _heartbeat(self.broadcaster, self.now)
        for parts in self.sender.acknowledged(beat, self.now):
            self.push(parts)
        for receiver in self.receivers:
            resend, ready = receiver.heartbeat(beat, self.now)
            assert resend == []  # receivers send nothing here
            self._deliver(receiver, ready)

    def tick(self) -> None:
        """Time passes with heartbeats: what stays unacknowledged is sent again."""
        self.now += 0.6
        self.heartbeat()
        for parts in self.sender.stalled(self.now):
            self.push(parts)

    def restart(self) -> None:
        """The broadcaster dies with what was on its way to it; a new one takes its place."""
        self.in_flight.clear()
        self.broadcaster = Broadcaster(self.tmp, 1 << 20, parent_pid=0)

    def _deliver(self, receiver: ClientProtocol, frames: list[wire.Frame]) -> None:
        self.delivered[id(receiver)].extend((f.channel, f.seq) for f in frames)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    channel_count=st.integers(1, 3),
    loss=st.floats(0.0, 0.8),
    lose_first=st.integers(0, 3),
    restarts=st.integers(0, 2),
    rnd=st.randoms(use_true_random=False),
)
def test_property_the_bus_over_a_lossy_path_delivers_everything_once_in_order(
    n: int, channel_count: int, loss: float, lose_first: int, restarts: int, rnd: random.Random
) -> None:
    """Frames lost at random on their way to the broadcaster (each channel's first ``lose_first``
    for sure), delayed, a broadcaster that restarts, a receiver that subscribes late.

    Every receiver subscribed from the start delivers every frame of each channel once, in
    order, after resends; the late one delivers, once and in order, every frame first
    published after it subscribed (one published before too, sent again since, may come too
    late to be delivered in order), and waits for none published before. Nothing is counted
    as lost (gap_timeout is out of reach: only resends fill the gaps).
    """
    with tempfile.TemporaryDirectory() as tmp:
        bus = _Bus(tmp, rnd, loss)
        bus.join()
        early = bus.receivers[0]
        names = [f"c{c}" for c in range(channel_count)]
        late_at = rnd.randrange(n + 1)
        restart_at = {rnd.randrange(n + 1) for _ in range(restarts)}
        for step in range(n):
            if step == late_at:
                bus.join()
            if step in restart_at:
                bus.restart()
            bus.publish(rnd.choice(names), lose_first)
            for _ in range(rnd.randrange(3)):
                if bus.in_flight:
                    bus.arrive()
            if rnd.random() < 0.3:
                bus.heartbeat()
            if rnd.random() < 0.1:
                bus.tick()
        for _ in range(500):
            while bus.in_flight:
                bus.arrive()
            if not bus.sender.outbox.unacked_count():
                break
            bus.tick()
        bus.heartbeat()  # the last news for the late receiver
        assert bus.sender.outbox.unacked_count() == 0
        sent = {name: bus.sender.outbox.peek_seq(name) - 1 for name in names}
        assert sorted(bus.delivered[id(early)]) == [(c, s) for c in names for s in range(1, sent[c] + 1)]
        for receiver in bus.receivers:
            delivered = bus.delivered[id(receiver)]
            assert all(_increasing([s for c, s in delivered if c == name]) for name in names)
            assert len(delivered) == len(set(delivered))
            owed = bus.published_to[id(receiver)] - bus.published_before[id(receiver)]
            assert owed <= set(delivered) <= bus.published_to[id(receiver)]
            assert receiver.inbox.waiting() == []
            assert (receiver.counters["gaps"], receiver.counters["frames_lost"]) == (0, 0)
        assert bus.sender.counters["frames_unrecoverable"] == 0


def _increasing(seqs: list[int]) -> bool:
    return all(a < b for a, b in zip(seqs, seqs[1:], strict=False))


# --------------------------------------------------------------------------- numbering and the tracker


def test_numbering_takes_a_number_only_when_asked() -> None:
    numbering = Numbering()
    assert numbering.peek("a") == numbering.peek("a") == 1
    assert [numbering.take("a"), numbering.take("a"), numbering.take("b")] == [1, 2, 1]
    assert numbering.peek("a") == 3


def test_tracker_sees_each_number_once_and_acknowledges_up_to_the_first_hole() -> None:
    seen = SeqTracker()
    assert [seen.add(s) for s in (1, 2, 4, 5, 4, 1)] == [True, True, True, True, False, False]
    assert (seen.contiguous, seen.ahead, seen.top) == (2, {4, 5}, 5)
    assert seen.add(3) and (seen.contiguous, seen.ahead) == (5, set())


def test_tracker_skips_what_is_acknowledged_elsewhere() -> None:
    seen = SeqTracker()
    for seq in (3, 7, 8):
        seen.add(seq)
    seen.skip_to(5)  # 1..5 count as seen; 7 and 8 still wait for 6
    assert (seen.contiguous, seen.ahead) == (5, {7, 8})
    assert not seen.add(4)
    seen.skip_to(2)  # behind: nothing changes
    assert seen.contiguous == 5
    seen.skip_to(6)  # and what follows the skipped numbers is taken at once
    assert (seen.contiguous, seen.ahead) == (8, set())


def test_tracker_gives_up_on_a_hole_or_forgets_what_is_past_it() -> None:
    seen = SeqTracker(contiguous=10)
    for seq in (12, 13, 15):
        seen.add(seq)
    seen.skip_first_hole()
    assert (seen.contiguous, seen.ahead) == (13, {15})
    seen.forget_ahead()
    assert (seen.contiguous, seen.ahead, seen.top) == (13, set(), 13)
    assert seen.add(15)  # to be sent again: new again


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=200))
def test_property_tracker_matches_a_plain_set(seqs: list[int]) -> None:
    seen = SeqTracker()
    model: set[int] = set()
    for seq in seqs:
        assert seen.add(seq, now=1.0) == (seq not in model)
        model.add(seq)
        assert seen.contiguous == next(n for n in range(len(model) + 2) if n + 1 not in model)
        assert seen.ahead == {s for s in model if s > seen.contiguous}
        assert seen.top == max(model)


def test_unacked_items_go_again_oldest_first_from_a_seq_or_after_a_delay() -> None:
    pending: Unacked[str] = Unacked()
    for seq in (1, 2, 3):
        pending.add(seq, f"f{seq}", now=float(seq))
    assert pending.ack(1) and not pending.ack(1) and list(pending) == [2, 3]
    assert pending.due(now=3.5, older_than=1.0) == [(2, "f2")]  # 3 was sent 0.5 s ago
    assert pending.due(now=3.6, older_than=1.0) == []  # 2 counts as sent at 3.5 now
    assert pending.due(now=4.0, from_seq=3) == [(3, "f3")]
    assert pending.oldest_sent_at() == 3.5
    pending.drop_oldest()
    assert list(pending) == [3] and len(pending) == 1
