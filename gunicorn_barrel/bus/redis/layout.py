"""Which Redis channel a bus frame travels on, and what a worker subscribes to. Sans-io.

One server (or Sentinel's master): bus channel C of namespace N is the Redis
channel ``barrel:bus:N:C``; every worker PSUBSCRIBEs to ``barrel:bus:N:*``
and so hears every frame, and a NACK goes to every sender on ``...\\x00nack``.

Redis Cluster (sharded pub/sub, ``SPUBLISH``/``SSUBSCRIBE``): a shard
channel lives on the master serving its slot, and has no patterns. So a
worker subscribes by name to the channels it has handlers for (and not to
the rest: another worker's channel never reaches it), and each channel is
spread over ``SPREAD`` shard channels ``barrel:bus:N:C#k``: a sender always
uses the k its origin picks, so the order of one sender's frames holds, and
the senders of a busy channel (every worker broadcasting on ``sio:socketio``)
load every shard, not one. A NACK goes to the one sender asked, on its own
``barrel:bus:N:\\x00nack#<origin>``.
"""
from __future__ import annotations

from collections.abc import Iterable

from gunicorn_barrel.bus import channels
from gunicorn_barrel.config.values import is_cluster

SPREAD = 16  # shard channels per bus channel on a cluster (about even over 3 to 8 shards)


class ChannelLayout:
    """The layout on one Redis server: PUBLISH, one PSUBSCRIBE pattern per worker."""

    sharded = False

    def __init__(self, namespace: str) -> None:
        self.prefix = channels.redis_prefix(namespace)

    def frame_channel(self, topic: bytes, origin: bytes) -> bytes:
        """The Redis channel of a frame of bus channel ``topic`` sent by ``origin``."""
        return self.prefix + topic

    def nack_channel(self, origin: bytes) -> bytes:
        """Where a receiver asks ``origin`` to send frames again."""
        return self.prefix + channels.NACK.encode()

    def topic(self, redis_channel: bytes) -> bytes:
        """The bus channel of a frame received on ``redis_channel``."""
        return redis_channel[len(self.prefix):]

    def subscriptions(self, bus_channels: Iterable[str], origin: bytes) -> list[bytes]:
        """The shard channels a receiver ``origin`` with handlers for ``bus_channels`` subscribes to."""
        raise NotImplementedError("one Redis server: a worker subscribes to the namespace's pattern")


class ShardedLayout(ChannelLayout):
    """The layout on a Redis Cluster: SPUBLISH, SSUBSCRIBE by name."""

    sharded = True

    def frame_channel(self, topic: bytes, origin: bytes) -> bytes:
        return b"%s%s#%d" % (self.prefix, topic, origin[0] % SPREAD)

    def nack_channel(self, origin: bytes) -> bytes:
        return b"%s%s#%s" % (self.prefix, channels.NACK.encode(), origin.hex().encode())

    def topic(self, redis_channel: bytes) -> bytes:
        # Every channel of this layout ends in "#<k>" or "#<origin>": a topic may hold a '#' too.
        end = redis_channel.rfind(b"#")
        return redis_channel[len(self.prefix):end if end >= 0 else None]

    def subscriptions(self, bus_channels: Iterable[str], origin: bytes) -> list[bytes]:
        names = [self.nack_channel(origin)]
        for channel in sorted(set(bus_channels)):
            topic = channel.encode()
            names += [b"%s%s#%d" % (self.prefix, topic, k) for k in range(SPREAD)]
        return names


def for_url(url: str, namespace: str) -> ChannelLayout:
    """The layout a bus at ``url`` uses (sharded on a ``redis+cluster://`` URL)."""
    return ShardedLayout(namespace) if is_cluster(url) else ChannelLayout(namespace)
