"""The worker side of the embedded store: requests over a DEALER socket, changes from the bus.

When the store process dies, the requests it had received and not answered
are lost with it. The supervisor restarts it (in about 0.1 s) and the DEALER
reconnects by itself; a monitor of the socket sees the reconnection and this
client sends every request still waiting again, so a call stalls about the
restart time instead of failing at ``store_timeout``. A write may have been
committed before the crash: each request carries this client's id and its
request id, and the store applies a write once whatever the number of copies
(see ``db``). Only reads run twice, which changes nothing.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any

import gevent
import msgpack
import zmq.green as zmq
from gevent.event import AsyncResult

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.api import Bus
from gunicorn_barrel.runtime import endpoints, zmq_monitor
from gunicorn_barrel.store.base import (
    Change,
    Store,
    StoreError,
    StoreTimeout,
    StoreValueError,
    Watcher,
    check_key,
    check_ttl,
    encode_value,
)
from gunicorn_barrel.store.embedded.db import INT64_MAX, INT64_MIN

_RECONNECT_IVL_MS = 20  # how soon the DEALER tries the restarted store again


class EmbeddedStore(Store):
    """A client of this gunicorn instance's store process."""

    def __init__(self, runtime_dir: str, timeout: float, max_value: int, bus: Bus) -> None:
        self.timeout = timeout
        self.max_value = max_value
        self._client_id = os.urandom(16)  # names this client's writes to the store across its restarts
        self._ids = itertools.count(1)
        # request id -> (its waiter, the request as sent, to send it again)
        self._pending: dict[int, tuple[AsyncResult, bytes]] = {}
        self._watchers: list[tuple[str, Watcher]] = []
        self.requests_resent = 0
        self._ctx: zmq.Context = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(endpoints.store_endpoint(runtime_dir))
        self._receiver = gevent.spawn(self._receive)
        self._watchdog = gevent.spawn(self._resend_on_reconnect, monitor)
        self._closed = False
        # Subscribe to changes now (zeromq subscriptions take a moment to
        # reach the broadcaster), so a watch() made later misses nothing.
        bus.subscribe(channels.STORE_CHANGES, self._on_change)

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv()
            except zmq.ZMQError:
                return
            try:
                answer = msgpack.unpackb(data, raw=False)
                waiter, _request = self._pending.pop(answer["id"])
            except (ValueError, TypeError, KeyError, msgpack.UnpackException):
                continue  # an answer to a call that timed out, a second copy, or garbage
            waiter.set(answer)

    def _resend_on_reconnect(self, monitor: zmq.Socket) -> None:
        """Send every waiting request again when the DEALER reconnects after losing the store."""
        lost = False
        try:
            while True:
                event = zmq_monitor.parse(monitor.recv_multipart()).event
                if event == zmq.EVENT_DISCONNECTED:
                    lost = True
                elif event == zmq.EVENT_CONNECTED and lost:
                    lost = False
                    for _waiter, request in list(self._pending.values()):
                        self._sock.send(request)
                        self.requests_resent += 1
        except zmq.ZMQError:
            return  # closed
        finally:
            monitor.close()

    def _call(self, op: str, **fields: Any) -> Any:
        if self._closed:
            raise StoreError("the store client is closed")
        request_id = next(self._ids)
        waiter = AsyncResult()
        # keep: how long the store must remember having applied this write
        # (we may send it again until our timeout).
        request = msgpack.packb({"id": request_id, "op": op, "client": self._client_id,
                                 "keep": self.timeout, **fields}, use_bin_type=True)
        self._pending[request_id] = (waiter, request)
        try:
            self._sock.send(request)
            answer = waiter.get(timeout=self.timeout)
        except gevent.Timeout:
            raise StoreTimeout(f"the embedded store did not answer {op} within {self.timeout} s "
                               "(a write may or may not have been applied)") from None
        finally:
            self._pending.pop(request_id, None)
        if not answer.get("ok"):
            error = StoreValueError if answer.get("kind") == "value" else StoreError
            raise error(answer.get("error", "store error"))
        return answer["result"]

    def get(self, key: str, default: Any = None) -> Any:
        found = self._call("get", key=check_key(key))
        return json.loads(found["value"]) if found["found"] else default

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._call("set", key=check_key(key), value=encode_value(value, self.max_value), ttl=check_ttl(ttl))

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key=check_key(key)))

    def incr(self, key: str, amount: int = 1) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise StoreValueError(f"incr amount must be an integer, got {amount!r}")
        if not INT64_MIN <= amount <= INT64_MAX:
            raise StoreValueError(f"incr amount must fit in 64 bits, got {amount!r}")
        return int(self._call("incr", key=check_key(key), amount=amount))

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None = None) -> bool:
        return bool(self._call(
            "compare_and_set", key=check_key(key), expected=encode_value(expected, self.max_value),
            value=encode_value(value, self.max_value), ttl=check_ttl(ttl),
        ))

    def scan(self, prefix: str, limit: int = 1000) -> dict[str, Any]:
        if not isinstance(prefix, str):
            raise StoreValueError(f"prefix must be a string, got {type(prefix).__name__}")
        rows = self._call("scan", prefix=prefix, limit=limit)
        return {key: json.loads(text) for key, text in rows.items()}

    def watch(self, prefix: str, callback: Watcher) -> None:
        if not isinstance(prefix, str):
            raise StoreValueError(f"prefix must be a string, got {type(prefix).__name__}")
        self._watchers.append((prefix, callback))

    def _on_change(self, frame: wire.Frame) -> None:
        payload = frame.payload
        key = payload.get("key")
        if not isinstance(key, str):
            return
        text = payload.get("value")
        change = Change(str(payload.get("op")), key, json.loads(text) if text is not None else None,
                        int(payload.get("version", 0)))
        for prefix, callback in list(self._watchers):
            if key.startswith(prefix):
                callback(change)

    def counters(self) -> dict[str, int]:
        """store_requests_resent: calls sent again to a restarted store process."""
        return {"store_requests_resent": self.requests_resent}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._receiver.kill(block=True, timeout=1.0)
        self._watchdog.kill(block=True, timeout=1.0)
        self._sock.disable_monitor()
        self._sock.close()
