"""The Redis bus and the Redis store through Sentinel (``redis+sentinel://``), with real failovers.

A master, its replica and three Sentinels of the test's own (tests/redis_sentinel.py);
gunicorn instances name only the Sentinels. The master is SIGKILLed and the
Sentinels promote the replica: the workers follow the new master, and the
bus's replay recovers what was published meanwhile.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_barrel.config import values
from gunicorn_barrel.config.values import SentinelAddress, sentinel_address
from tests import cross_instance
from tests.harness import wait_for
from tests.redis_sentinel import SentinelGroup
from tests.test_redis_bus import _check_stream_through, failover_bus_env, streaming_instances
from tests.test_store import (
    check_watchers_back_after_failover,
    op,
    wait_calls_work_after_failover,
    watching_workers,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("url, expected", [
    ("redis+sentinel://10.0.0.5:26379/mymaster",
     SentinelAddress((("10.0.0.5", 26379),), "mymaster")),
    ("redis+sentinel://app:p%40ss@a:1,b:2,[::1]:3/m/4",
     SentinelAddress((("a", 1), ("b", 2), ("::1", 3)), "m", 4, "app", "p@ss")),
    ("redis+sentinel://:secret@a:1/m", SentinelAddress((("a", 1),), "m", 0, None, "secret")),
])
def test_sentinel_urls_name_the_sentinels_the_master_and_the_database(
        url: str, expected: SentinelAddress) -> None:
    assert sentinel_address(url) == expected
    assert values.bus_backend(url) == url and values.store_backend(url) == url
    assert "secret" not in values.safe_url(url) and "p%40ss" not in values.safe_url(url)


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    try:
        yield group.start()
    finally:
        group.stop()


def test_the_cross_instance_suite_on_two_instances_through_sentinel(sentinels: SentinelGroup) -> None:
    cross_instance.check_all_on_new_instances(2, failover_bus_env(sentinels.url, "s2"))


def test_master_sigkilled_while_streaming_every_receiver_gets_every_message(
        sentinels: SentinelGroup, tmp_path: Path) -> None:
    # Two instances of one worker each: a sender on one, node socket.io-client
    # receivers on both, 100 messages/s while the master dies and is replaced.
    env = failover_bus_env(sentinels.url, "failover")
    with streaming_instances(env, tmp_path, instances=2) as (group, receivers):
        delta, sender, (other,) = _check_stream_through(group, receivers,
                                                        lambda _sender: sentinels.fail_over())
        # Both workers are subscribed (one pattern each) on the promoted replica.
        subscribers = sentinels.replica.client.client_list(_type="pubsub")
        assert sum(1 for c in subscribers if int(c["psub"]) > 0) == 2, subscribers
    assert delta[other]["lost_at_clients"] == 0, delta  # replayed from the sender's outbox
    assert delta[sender]["bus_publish_failures"] > 0, delta  # it published while no master was there
    assert delta[sender]["frames_resent"] > 0, delta
    assert all(d["bus_reconnects"] >= 1 for d in delta.values()), delta  # both moved over


def _replicated(group: SentinelGroup) -> bool:
    """Whether the replica has everything the master had written when asked."""
    written = group.master.client.info("replication")["master_repl_offset"]
    return bool(group.replica.client.info("replication").get("slave_repl_offset", -1) >= written)


def test_the_store_follows_the_promoted_master(sentinels: SentinelGroup) -> None:
    with watching_workers(sentinels.url) as (clients, prefix):
        op(clients[0], "set", prefix + "before", {"n": 1})
        assert op(clients[1], "incr", prefix + "count") == 1
        wait_for(lambda: _replicated(sentinels), 10, "the replica to have the writes")

        sentinels.fail_over()
        wait_calls_work_after_failover(clients, prefix + "before")
        assert op(clients[0], "get", prefix + "before") == {"n": 1}  # replicated: kept
        assert op(clients[1], "incr", prefix + "count") == 2
        check_watchers_back_after_failover(clients, prefix)
