"""Unit tests of the bus port and the store object: what is registered before they connect.

The real thing (gunicorn -w 2, with and without --preload) is tests/test_import_time.py;
these use stand-ins for the bus client and the store backend.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gunicorn_barrel import counters, events
from gunicorn_barrel.bus import api as bus_api
from gunicorn_barrel.bus.api import BusClosed, BusNotConnected, BusPort
from gunicorn_barrel.bus.wire import Frame
from gunicorn_barrel.store import StoreError, WorkerStore, get_store
from gunicorn_barrel.store.base import Change


class FakeBus:
    origin = b"o" * 16
    pid = 0

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.handlers: dict[str, list[Any]] = {}
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def subscribe(self, channel: str, handler: Any) -> None:
        self.handlers.setdefault(channel, []).append(handler)

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        self.published.append((channel, payload))

    def close(self) -> None:
        self.closed = True

    def deliver(self, channel: str, payload: dict[str, Any]) -> None:
        for handler in self.handlers.get(channel, []):
            handler(Frame(channel, self.origin, 1, payload))


class FakeBackend:
    def __init__(self) -> None:
        self.watches: list[tuple[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.closed = False

    def watch(self, prefix: str, callback: Any) -> None:
        self.watches.append((prefix, callback))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def counters(self) -> dict[str, int]:
        return {"store_watch_gaps": 0}

    def close(self) -> None:
        self.closed = True


def test_subscriptions_made_before_the_bus_connects_take_effect_when_it_does() -> None:
    port, bus = BusPort(), FakeBus()
    seen: list[Any] = []
    port.subscribe("ev:a", lambda frame: seen.append(("early", frame.payload)))
    connected: list[Any] = []
    port.when_connected(connected.append)
    port.connect(bus)
    assert connected == [bus]
    port.subscribe("ev:a", lambda frame: seen.append(("late", frame.payload)))
    later: list[Any] = []
    port.when_connected(later.append)  # already connected: at once
    assert later == [bus]
    bus.deliver("ev:a", {"n": 1})
    assert seen == [("early", {"n": 1}), ("late", {"n": 1})]
    port.publish("ev:a", {"n": 2})
    assert bus.published == [("ev:a", {"n": 2})]
    with pytest.raises(RuntimeError, match="connected already"):
        port.connect(FakeBus())


def test_publishing_before_the_bus_connects_or_after_it_closed_is_a_clear_error() -> None:
    port, bus = BusPort(), FakeBus()
    with pytest.raises(BusNotConnected, match="connects when a barrel worker starts"):
        port.publish("ev:a", {})
    with pytest.raises(ValueError, match="reserved"):
        port.subscribe("\x00hb", lambda frame: None)
    port.connect(bus)
    port.close()
    assert bus.closed
    with pytest.raises(BusClosed, match="exiting"):
        port.publish("ev:a", {})


def test_outside_a_barrel_worker_events_register_but_emitting_raises() -> None:
    assert bus_api.port.connected() is None  # pytest is no barrel worker
    events.on("unit-test-event", lambda data: None)  # kept for a bus that never comes
    with pytest.raises(BusNotConnected, match="hooks.install"):
        events.emit("unit-test-event", {"x": 1})
    assert counters() == {}


def test_watches_made_before_the_store_connects_take_effect_when_it_does() -> None:
    store, backend = WorkerStore(), FakeBackend()
    early = lambda change: None  # noqa: E731
    store.watch("visits:", early)
    with pytest.raises(StoreError, match="not connected in this process"):
        store.get("visits:a")
    with pytest.raises(StoreError, match="not connected in this process"):
        store.set("visits:a", 1)
    store.connect(backend)  # type: ignore[arg-type]
    assert backend.watches == [("visits:", early)]
    late = lambda change: None  # noqa: E731
    store.watch("other:", late)
    assert backend.watches[-1] == ("other:", late)
    backend.data["k"] = 5
    assert store.get("k") == 5
    assert store.counters() == {"store_watch_gaps": 0}
    store.close()
    assert backend.closed
    with pytest.raises(StoreError, match="closed: this worker is exiting"):
        store.get("k")


def test_watching_a_disabled_store_fails_the_worker_with_the_reason() -> None:
    store = WorkerStore()
    store.watch("visits:", lambda change: None)
    with pytest.raises(StoreError, match="watches store keys .* disabled"):
        store.connect(None)
    with pytest.raises(StoreError, match="disabled"):
        store.get("k")
    quiet = WorkerStore()
    quiet.connect(None)  # no watches: the store is simply off
    with pytest.raises(StoreError, match="disabled"):
        quiet.watch("x", lambda change: None)


def test_get_store_returns_one_object_that_accepts_watches_before_any_worker_runs() -> None:
    store = get_store()
    assert store is get_store() and isinstance(store, WorkerStore)
    changes: list[Change] = []
    store.watch("unit-test:", changes.append)
    with pytest.raises(StoreError, match="post_worker_init"):
        store.incr("unit-test:a")
