"""Unit tests of the Redis bus's recovery parts, sans-io (gunicorn_barrel.bus.redis.replay)."""
from __future__ import annotations

from collections import Counter

from gunicorn_barrel.bus.redis.replay import GapInbox, NackSchedule, ReplayWindow

A = (b"a" * 16, "ch")


def test_window_keeps_the_last_frames_within_both_bounds() -> None:
    window: ReplayWindow[str] = ReplayWindow(max_frames=3, max_bytes=100)
    for seq in range(1, 6):
        window.add("c", seq, f"f{seq}", 10)
    assert len(window) == 3
    assert window.get("c", 1, 5, now=0.0, again_after=0.2) == ([(3, "f3"), (4, "f4"), (5, "f5")], 2)
    window.add("c", 6, "big", 95)  # over max_bytes with anything else: only it stays
    assert window.get("c", 1, 6, now=1.0, again_after=0.2) == ([(6, "big")], 5)


def test_window_replays_a_frame_once_for_receivers_asking_together() -> None:
    window: ReplayWindow[str] = ReplayWindow(10, 1000)
    window.add("c", 1, "f1", 1)
    window.add("c", 2, "f2", 1)
    assert window.get("c", 1, 2, now=10.0, again_after=0.2) == ([(1, "f1"), (2, "f2")], 0)
    assert window.get("c", 1, 2, now=10.1, again_after=0.2) == ([], 0)  # another receiver
    assert window.get("c", 2, 2, now=10.3, again_after=0.2) == ([(2, "f2")], 0)  # asked again later
    assert window.get("other", 1, 1, now=10.3, again_after=0.2) == ([], 1)


def test_gap_inbox_reports_the_missing_seqs_while_it_holds_frames_back() -> None:
    inbox: GapInbox[str] = GapInbox(gap_timeout=5.0, max_held=100, counters=Counter())
    assert inbox.accept(A, 1, 1, "f1", 0.0) == ["f1"]
    assert inbox.gap(A) is None
    assert inbox.accept(A, 5, 1, "f5", 0.1) == []
    assert inbox.gap(A) == (2, 4)
    assert inbox.accept(A, 2, 1, "f2", 0.2) == ["f2"]
    assert list(inbox.gaps()) == [(A, 3, 4)]
    assert inbox.accept(A, 4, 1, "f4", 0.2) == []
    assert inbox.accept(A, 3, 1, "f3", 0.3) == ["f3", "f4", "f5"]
    assert inbox.gap(A) is None and list(inbox.gaps()) == []
    assert inbox.gap((b"b" * 16, "ch")) is None


def test_gap_inbox_asks_for_a_new_senders_frames_from_its_base() -> None:
    inbox: GapInbox[str] = GapInbox(gap_timeout=5.0, max_held=100, counters=Counter())
    # The first frame we get of a sender says 2..4 were not yet published when it was sent.
    assert inbox.accept(A, 5, 2, "f5", 0.0) == []
    assert inbox.gap(A) == (2, 4)
    assert inbox.accept(A, 2, 2, "f2", 0.1) == ["f2"]  # a replay
    assert inbox.accept(A, 3, 2, "f3", 0.1) == ["f3"]
    assert inbox.accept(A, 4, 2, "f4", 0.1) == ["f4", "f5"]
    assert inbox.gap(A) is None


def test_nack_schedule_asks_at_once_then_ever_more_slowly() -> None:
    nacks = NackSchedule(first=0.25, most=1.0)
    assert nacks.due(A, 2, 4, now=0.0)
    assert not nacks.due(A, 2, 4, now=0.1)
    assert not nacks.due(A, 3, 4, now=0.2)  # the same gap, filling: no new request
    assert nacks.due(A, 3, 4, now=0.3)
    assert not nacks.due(A, 3, 4, now=0.7)
    assert nacks.due(A, 3, 4, now=0.8)  # after 0.5 s
    assert nacks.due(A, 3, 4, now=1.8)  # after 1 s (the most)
    assert nacks.due(A, 3, 4, now=2.85)
    assert nacks.due(A, 7, 9, now=2.9)  # a new gap: at once


def test_nack_schedule_forgets_closed_gaps() -> None:
    nacks = NackSchedule(first=0.25, most=1.0)
    assert nacks.due(A, 2, 4, now=0.0)
    nacks.forget_closed(set())
    assert nacks.due(A, 2, 4, now=0.1)
