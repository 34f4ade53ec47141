"""The Redis backend of the shared store (the ``store`` barrel setting is a redis:// URL).

Keys live under ``barrel:kv:`` as canonical JSON text (``sort_keys``, no spaces),
so a Redis shared with other programs is not polluted and compare-and-set is a
plain string comparison. Every write runs in one Lua script that also takes a
version (INCR of ``barrel:kvmeta:version``) and PUBLISHes the change on
``barrel:kv:changes``: the write, its version and its event are one atomic step.

On a Redis Cluster (``redis+cluster://``) the names carry the hash tag
``{barrel}`` (``{barrel}:kv:<key>``, ``{barrel}:kvmeta:version``, the shard
channel ``{barrel}:kv:changes``, SPUBLISHed): one script touches one slot,
so the whole store lives on the shard serving that slot (and follows its
failover); it is not spread over the shards.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from gunicorn_barrel.bus.redis import cluster, connection
from gunicorn_barrel.bus.redis.pubsub import live_messages
from gunicorn_barrel.config.values import safe_url
from gunicorn_barrel.store.base import (
    Change,
    Store,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StoreValueError,
    Watcher,
    check_key,
    check_ttl,
    encode_value,
)

log = logging.getLogger("gunicorn_barrel.store")

KEY_PREFIX = "barrel:kv:"
CHANGES_CHANNEL = "barrel:kv:changes"
# Not under KEY_PREFIX: "barrel:kv:version" is where the user key "version" lives.
VERSION_KEY = "barrel:kvmeta:version"
_CLUSTER_TAG = "{barrel}"  # instead of "barrel" in each name above on a cluster: one slot

_POOL_SIZE = 64  # connections per worker; more concurrent calls wait (up to the timeout) for one
_SCAN_COUNT = 1000
_MGET_CHUNK = 500
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
_IDLE_PING = 5.0  # the subscriber PINGs after this many silent seconds, to notice a dead link
_INT64 = 2**63

# Process-wide counters of this backend (see RedisStore.counters()).
counters: Counter[str] = Counter()

# ARGV of every writing script ends with the channel and the head of the event:
# its JSON text without the closing brace; the script appends the version.
_PUBLISH = """
local version = redis.call('INCR', KEYS[2])
redis.call('_PUBLISH_COMMAND_', ARGV[#ARGV - 1],
           ARGV[#ARGV] .. _VALUE_ .. ',"version":' .. string.format('%d', version) .. '}')
"""

_SET = """
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
""" + _PUBLISH.replace("_VALUE_", "''") + """
return 1
"""

_DELETE = """
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
""" + _PUBLISH.replace("_VALUE_", "''") + """
return 1
"""

# INCRBY is the integer check: it refuses any text that is not a 64-bit
# integer (JSON strings, floats, booleans, null, objects), changes nothing
# then, and keeps the key's TTL. The JSON text of an integer is its decimal.
_INCR = """
local added = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(added) == 'table' and added.err then
  return {0, added.err}
end
local text = redis.call('GET', KEYS[1])
""" + _PUBLISH.replace("_VALUE_", "',\"value\":\"' .. text .. '\"'") + """
return {1, text}
"""

# ARGV: absent-only flag, expected canonical text, new text, ttl ms or '', channel, head.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
""" + _PUBLISH.replace("_VALUE_", "''") + """
return 1
"""


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _storage_key(prefix: str, key: str) -> bytes:
    check_key(key)
    try:
        return (prefix + key).encode("utf-8")
    except UnicodeEncodeError:
        raise StoreValueError("keys must be valid Unicode text (no lone surrogates)") from None


def _canonical(value: Any, max_bytes: int) -> str:
    """The JSON text stored for ``value``: encode_value's checks, then sorted object keys."""
    text = encode_value(value, max_bytes)
    if isinstance(value, (dict, list, tuple)):
        # Through json.loads: keys are strings then, so sorting cannot fail on mixed key types.
        text = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    return text


def _ttl_ms(ttl: object) -> str:
    seconds = check_ttl(ttl)
    return "" if seconds is None else str(max(1, round(seconds * 1000)))


def _event_head(op: str, key: str, db: int, value: str | None = None, with_value: bool = True) -> str:
    fields: dict[str, Any] = {"op": op, "key": key, "db": db}
    if with_value:
        fields["value"] = value
    return json.dumps(fields)[:-1]


class RedisStore(Store):
    """A client of a Redis server, shared by every worker (and every gunicorn) using the URL.

    Calls are bounded: each Redis command waits at most ``timeout`` seconds
    (socket timeouts, no retries, so a write is never applied twice); an
    unreachable server raises StoreUnavailable, a silent one StoreTimeout
    (then a write may or may not have been applied). In a gevent worker the
    sockets are cooperative, so a call blocks only its greenlet.

    Changes reach watchers through Redis pub/sub, which guarantees less than
    the embedded store's bus:

    * Pub/sub is fire-and-forget. Changes published while this worker's
      subscriber is disconnected (Redis restarted or unreachable, or this
      subscriber cut off by Redis for falling behind its pub/sub output buffer
      limit) are lost for it, and are not re-delivered: the subscriber
      reconnects with backoff and counts each resumption in
      ``store_watch_reconnects``; treat the keys watched as unknown then
      (re-read them). While connected, a change whose version is not the
      previous one + 1 is counted in ``store_watch_gaps``.
    * Keys expiring by their TTL are not reported (no "expire" changes):
      Redis tells of expirations only through keyspace notifications, which
      are off by default and not used here.
    * Versions come from one Redis counter per database: they increase with
      every change while Redis keeps its data, but start again from 1 if
      Redis loses it (a restart without persistence).
    * Order: changes arrive in the order Redis applied them (so in order per
      key), but a worker may get the event of its own write after the write
      call returned, or before.
    * Scans walk the whole Redis database (SCAN), so they cost in proportion
      to all its keys, not only those of the prefix.
    * incr works on 64-bit integers; a value or result beyond raises StoreValueError.
    """

    def __init__(self, url: str, timeout: float, max_value: int) -> None:
        self.url = safe_url(url)
        self.timeout = timeout
        self.max_value = max_value
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._url = url
        self._options = options
        self.sharded = connection.is_cluster(url)
        tag = _CLUSTER_TAG if self.sharded else "barrel"
        self.key_prefix, self.version_key, self.channel = (
            name.replace("barrel", tag, 1) for name in (KEY_PREFIX, VERSION_KEY, CHANGES_CHANNEL))
        self._client: connection.AnyClient | None = None
        self._watchers: list[tuple[str, Watcher]] = []
        self._subscriber: gevent.Greenlet | None = None
        self._live = Event()
        self._last_version: int | None = None
        self._closed = False
        self.db = 0
        if not self.sharded:
            try:
                pool = connection.pool(url, _POOL_SIZE, wait_for_free=timeout, **options)
            except ValueError as exc:
                raise StoreError(f"bad Redis URL {self.url}: {exc}") from None
            self.db = int(pool.connection_kwargs.get("db", 0) or 0)
            self._connect(redis.Redis(connection_pool=pool))

    def _connect(self, client: connection.AnyClient) -> None:
        """Use ``client``, and its scripts (a cluster's client is made at the first call)."""
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        self._set, self._delete, self._incr, self._cas = (
            client.register_script(script.replace("_PUBLISH_COMMAND_", command))
            for script in (_SET, _DELETE, _INCR, _COMPARE_AND_SET))
        self._client = client

    # -- calls ------------------------------------------------------------

    @contextmanager
    def _call(self, op: str) -> Iterator[connection.AnyClient]:
        if self._closed:
            raise StoreError("the store client is closed")
        try:
            if self._client is None:  # a cluster: learn its layout now (it may be down at start)
                self._connect(connection.cluster_client(self._url, **self._options))
            assert self._client is not None
            yield self._client
        except RedisTimeoutError:
            raise StoreTimeout(f"Redis at {self.url} did not answer {op} within {self.timeout} s "
                               "(a write may or may not have been applied)") from None
        except RedisConnectionError as exc:
            if "No connection available" in str(exc):
                raise StoreTimeout(f"all {_POOL_SIZE} connections to Redis at {self.url} stayed busy "
                                   f"for {self.timeout} s ({op} not sent)") from None
            raise StoreUnavailable(f"cannot reach Redis at {self.url} for {op}: {exc}") from None
        except RedisError as exc:
            raise StoreError(f"Redis at {self.url} refused {op}: {exc}") from None
        except RedisClusterException as exc:  # no node answers, or a slot without a master
            raise StoreUnavailable(f"cannot reach the Redis Cluster at {self.url} for {op}: {exc}") from None

    def get(self, key: str, default: Any = None) -> Any:
        name = _storage_key(self.key_prefix, key)
        with self._call("get") as client:
            text = client.get(name)
        return default if text is None else json.loads(text)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        name = _storage_key(self.key_prefix, key)
        text = _canonical(value, self.max_value)
        px = _ttl_ms(ttl)
        with self._call("set"):
            self._set(keys=[name, self.version_key],
                      args=[text, px, self.channel, _event_head("set", key, self.db, text)])

    def delete(self, key: str) -> bool:
        name = _storage_key(self.key_prefix, key)
        with self._call("delete"):
            return bool(self._delete(keys=[name, self.version_key],
                                     args=[self.channel, _event_head("delete", key, self.db)]))

    def incr(self, key: str, amount: int = 1) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise StoreValueError(f"incr amount must be an integer, got {amount!r}")
        name = _storage_key(self.key_prefix, key)
        if not -_INT64 <= amount < _INT64:
            raise StoreValueError(f"incr amount must fit in 64 bits, got {amount!r}")
        with self._call("incr"):
            ok, text = self._incr(keys=[name, self.version_key], args=[
                str(amount), self.channel, _event_head("set", key, self.db, with_value=False)])
        if not ok:
            detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            raise StoreValueError(f"incr needs a 64-bit integer value at {key!r} ({detail})")
        return int(text)

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None = None) -> bool:
        name = _storage_key(self.key_prefix, key)
        expected_text = _canonical(expected, self.max_value)
        text = _canonical(value, self.max_value)
        px = _ttl_ms(ttl)
        with self._call("compare_and_set"):
            return bool(self._cas(keys=[name, self.version_key], args=[
                "1" if expected is None else "0", expected_text, text, px,
                self.channel, _event_head("set", key, self.db, text)]))

    def scan(self, prefix: str, limit: int = 1000) -> dict[str, Any]:
        if not isinstance(prefix, str):
            raise StoreValueError(f"prefix must be a string, got {type(prefix).__name__}")
        if not isinstance(limit, int) or not 0 < limit <= 100_000:
            raise StoreValueError("scan needs a string prefix and a limit in 1..100000")
        try:
            pattern = (self.key_prefix + _glob_escape(prefix) + "*").encode("utf-8")
        except UnicodeEncodeError:
            raise StoreValueError("prefix must be valid Unicode text (no lone surrogates)") from None
        skip = len(self.key_prefix)
        found: dict[str, Any] = {}
        with self._call("scan") as client:
            names: set[bytes] = set(client.scan_iter(match=pattern, count=_SCAN_COUNT))
            keys = []
            for name in names:
                try:
                    keys.append(name[skip:].decode("utf-8"))
                except UnicodeDecodeError:
                    continue  # not written by this store
            keys.sort()
            for start in range(0, len(keys), _MGET_CHUNK):
                chunk = keys[start:start + _MGET_CHUNK]
                texts = client.mget([(self.key_prefix + k).encode("utf-8") for k in chunk])
                for key, text in zip(chunk, texts, strict=True):
                    if text is None:
                        continue  # expired or deleted since the SCAN
                    try:
                        found[key] = json.loads(text)
                    except ValueError:
                        continue  # not written by this store
                    if len(found) == limit:
                        return found
        return found

    # -- watchers ---------------------------------------------------------

    def watch(self, prefix: str, callback: Watcher) -> None:
        """Call ``callback(change)`` for each change of a key starting with ``prefix``.

        The first call starts this worker's subscriber and waits (up to the
        timeout) until Redis confirmed the subscription, so changes made after
        watch() returns are delivered. If Redis is unreachable, the callback
        stays registered and gets the changes made once the subscriber is in.
        """
        if not isinstance(prefix, str):
            raise StoreValueError(f"prefix must be a string, got {type(prefix).__name__}")
        if self._closed:
            raise StoreError("the store client is closed")
        self._watchers.append((prefix, callback))
        if self._subscriber is None:
            self._subscriber = gevent.spawn(self._subscribe_forever)
        if not self._live.wait(self.timeout):
            log.warning("store: Redis at %s did not confirm the change subscription within %s s; "
                        "watchers will get the changes made once it does", self.url, self.timeout)

    def counters(self) -> dict[str, int]:
        """This process's counters of the Redis backend (store_watch_reconnects, store_watch_gaps)."""
        return {"store_watch_reconnects": 0, "store_watch_gaps": 0, **counters}

    def _subscribe_forever(self) -> None:
        backoff = _BACKOFF_FIRST
        was_live = False
        failing = False
        while not self._closed:
            try:
                self._subscribe_once(was_live)
            except connection.FAILURES as exc:
                if self._live.is_set():
                    log.warning("store: lost the change subscription to Redis at %s (%s); reconnecting. "
                                "Changes published until it is back are not delivered here.", self.url, exc)
                elif not failing:
                    log.warning("store: cannot subscribe to changes at Redis %s (%s); retrying",
                                self.url, exc)
                failing = True
            except Exception:
                log.exception("store: the change subscriber failed; restarting it")
            if self._live.is_set():
                was_live, failing = True, False
                backoff = _BACKOFF_FIRST
                self._live.clear()
            self._last_version = None
            gevent.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _subscribe_once(self, was_live: bool) -> None:
        for message in self._messages():
            kind = message.get("type")
            if kind in ("subscribe", "subscribed"):
                if was_live:
                    counters["store_watch_reconnects"] += 1
                    log.warning("store: change subscription to Redis at %s is back; changes "
                                "published while it was down were lost", self.url)
                self._live.set()
            elif kind in ("message", "smessage"):
                self._dispatch(message.get("data"))

    def _messages(self) -> Iterator[dict[str, Any]]:
        """The change channel's messages: subscribed on the server, or on the cluster's shard."""
        if self.sharded:
            yield from cluster.sharded_messages(self._url, [self.channel.encode()], lambda: self._closed,
                                                self.timeout, _IDLE_PING, 1.0, **self._options)
            return
        sub = connection.client(self._url, 1, **self._options)
        pubsub = sub.pubsub()
        try:
            pubsub.subscribe(self.channel)
            yield from live_messages(pubsub, self._live, lambda: self._closed, self.timeout, _IDLE_PING,
                                     poll=1.0)
        finally:
            pubsub.close()
            connection.close(sub)

    def _dispatch(self, data: Any) -> None:
        try:
            payload = json.loads(data)
            key, op, version = payload["key"], payload["op"], int(payload["version"])
            if not isinstance(key, str) or not isinstance(op, str):
                return
            if payload.get("db", 0) != self.db:
                return  # pub/sub channels are shared by all the databases of a server
            text = payload.get("value")
            value = json.loads(text) if text is not None else None
        except (ValueError, TypeError, KeyError):
            log.warning("store: ignored a malformed change event from Redis at %s", self.url)
            return
        if self._last_version is not None and version > self._last_version + 1:
            counters["store_watch_gaps"] += version - self._last_version - 1
        self._last_version = version
        change = Change(op, key, value, version)
        for prefix, callback in list(self._watchers):
            if key.startswith(prefix):
                try:
                    callback(change)
                except Exception:
                    log.exception("store: watcher %r of %r failed on %s", callback, prefix, change)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._subscriber is not None:
            self._subscriber.kill(block=True, timeout=1.0)
        self._live.clear()
        if self._client is not None:
            connection.close(self._client)
