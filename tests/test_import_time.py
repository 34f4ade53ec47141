"""Handlers registered at app import (events.on, store.watch, forward_to_room), as the README shows.

gunicorn imports the app before post_worker_init (in the arbiter, before fork,
with --preload), so these run before any bus exists; they must take effect in
every worker when its bus connects.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.harness import Client, gunicorn, spread_clients, wait_for

pytestmark = pytest.mark.integration

APP = "tests.apps.import_time_app:wsgi"


def _one_client_per_worker(url: str) -> list[Client]:
    clients = spread_clients(url, 2, per_worker=1)
    keep = list({c.pid: c for c in clients}.values())
    for c in clients:
        if c not in keep:
            c.close()
    return keep


def _wait_until_every_worker_is_subscribed(clients: list[Client]) -> None:
    """Probe until each worker's import-time event handler and store watch have seen a probe."""

    def ready() -> bool:
        clients[0].call("announce", {"probe": True})
        clients[0].call("visit", "visits:probe")
        for c in clients:
            seen = c.call("seen")
            if {"probe": True} not in seen["events"] or not any(
                    ch[1] == "visits:probe" for ch in seen["changes"]):
                return False
        return True

    wait_for(ready, 30, "every worker's import-time handlers to receive a probe", interval=0.2)


class Relayed:
    """What one client got from its worker's import-time handlers ("announced", "store_change")."""

    def __init__(self, client: Client) -> None:
        self.lock = threading.Lock()
        self.announced: list[Any] = []
        self.forwarded: list[Any] = []
        client.sio.on("announced", self._record(self.announced))
        client.sio.on("store_change", self._record(self.forwarded))

    def _record(self, into: list[Any]) -> Any:
        def record(data: Any) -> None:
            with self.lock:
                into.append(data)
        return record

    def of(self, key: str) -> tuple[list[Any], list[Any]]:
        with self.lock:
            return ([a for a in self.announced if "tag" in a["data"]],
                    [f for f in self.forwarded if f["key"] == key])


def _seen_by_worker(client: Client, key: str) -> tuple[list[str], list[Any]]:
    """The tagged events and the changes of ``key`` that the client's worker's handlers saw."""
    seen = client.call("seen")
    return ([e["tag"] for e in seen["events"] if "tag" in e],
            [ch for ch in seen["changes"] if ch[1] == key])


@pytest.mark.parametrize("extra_args", [(), ("--preload",)], ids=["fork-load", "preload"])
def test_handlers_registered_at_import_take_effect_in_every_worker(extra_args: tuple[str, ...]) -> None:
    with gunicorn(app=APP, workers=2, extra_args=extra_args) as srv:
        clients = _one_client_per_worker(srv.url)
        assert len(clients) == 2
        relayed = {c.pid: Relayed(c) for c in clients}
        try:
            _wait_until_every_worker_is_subscribed(clients)
            for c in clients:
                assert c.call("join_stats") == "ok"
            key = "visits:" + uuid.uuid4().hex[:8]
            tags = []
            for c in clients:  # each worker emits an event and changes the key once
                tags.append(f"{c.pid}-{uuid.uuid4().hex[:6]}")
                assert c.call("announce", {"tag": tags[-1]}) == "ok"
                c.call("visit", key)

            for c in clients:  # events.on and store.watch handlers, in every worker
                wait_for(lambda c=c: min(map(len, _seen_by_worker(c, key))) >= 2, 15,
                         f"both events and both changes in worker {c.pid}")
                events, changes = _seen_by_worker(c, key)
                assert sorted(events) == sorted(tags)
                assert changes == [["set", key, 1], ["set", key, 2]]

            for c in clients:  # what they relayed, and forward_to_room, reached each worker's client
                got = relayed[c.pid]
                wait_for(lambda got=got: min(map(len, got.of(key))) >= 2, 15,
                         f"relayed events at the client of {c.pid}")
                announced, forwarded = got.of(key)
                assert {a["worker"] for a in announced} == {c.pid}
                assert sorted(a["data"]["tag"] for a in announced) == sorted(tags)
                assert [(f["op"], f["value"]) for f in forwarded] == [("set", 1), ("set", 2)]
        finally:
            for c in clients:
                c.close()
