"""A server-to-client call() hands the client its argument as python-socketio does.

The oracle is python-socketio itself: the same app under plain ``-k gevent``
with python-socketio's own manager must deliver the same. Before python-socketio
5.16, PubSubManager passed a bus message's argument list on as one argument, and
barrel delivered ``call("question", "ping")`` as ``["ping"]`` (CI's matrix runs
this file against the oldest versions setup.cfg allows).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, Gunicorn, gunicorn, spread_clients

pytestmark = pytest.mark.integration

QUESTIONS = ["ping", ["a", "b"], ["only"], {"bin": b"\x00\xff"}, [b"\x01", "x"], 0]
SERVERS = {
    "barrel-1-worker": {"workers": 1},
    "barrel-2-workers": {"workers": 2},
    "plain-python-socketio": {"workers": 1, "conf": Path("/dev/null"), "extra_args": ("-k", "gevent"),
                              "env": {"TEST_PLAIN_SOCKETIO": "1"}},
}


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    with gunicorn(**SERVERS[request.param]) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: Gunicorn) -> Iterator[list[Client]]:
    group = spread_clients(server.url, server.workers, per_worker=1)
    yield group
    for c in group:
        c.close()


@pytest.mark.parametrize("question", QUESTIONS, ids=repr)
def test_call_delivers_its_argument_unchanged(clients: list[Client], question: Any) -> None:
    asker, target = clients[0], clients[-1]  # other workers' clients where there are several
    before = len(target.got("question"))
    reply = asker.call("ask", {"to": target.sid, "question": question}, timeout=20)
    assert reply == {"answer": f"42 from {target.pid}", "pid": asker.pid}
    assert target.got("question")[before:] == [question]
