"""gunicorn's connection settings under the barrel worker: keepalive = 0 and proxy_protocol.

The barrel worker serves a connection one request at a time (it peeks at
each request line for session routing), so it must do what gunicorn's own
loop does: read without a timeout when keepalive is 0, and take a PROXY
header in a connection's first request only, whichever worker serves it.
"""
from __future__ import annotations

import http.client
import socket
import time

import pytest

from gunicorn_barrel.worker import proxy_header
from tests.harness import gunicorn
from tests.node_clients import all_workers_serving
from tests.test_polling import owner_pid, sessions_on_distinct_workers

pytestmark = pytest.mark.integration


def _request(path: str, proxy: str = "", method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    return (f"PROXY {proxy}\r\n" if proxy else "").encode() + head.encode() + body


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one response; (0, b"") if the server closed without answering."""
    resp = http.client.HTTPResponse(sock)
    try:
        resp.begin()
    except http.client.RemoteDisconnected:
        return 0, b""
    return resp.status, resp.read()


def _ask(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    sock.sendall(request)
    return _response(sock)


def test_keepalive_0_waits_for_a_request_that_comes_late() -> None:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=2, extra_args=("--keep-alive", "0")) as srv:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                # The request comes after the worker started waiting for it
                # (a slow client): the case under test, not a synchronization.
                time.sleep(0.3)
                status, body = _ask(sock, _request("/addr"))
                assert status == 200, f"closed unanswered (log: {srv.log_path})"
                assert body.startswith(b"127.0.0.1 ")


PROXY_ARGS = ("--proxy-protocol", "v1", "--proxy-allow-from", "127.0.0.1")


def test_only_a_connections_first_request_may_carry_a_proxy_header() -> None:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=2, extra_args=PROXY_ARGS) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            status, body = _ask(sock, _request("/addr", proxy="TCP4 198.51.100.7 127.0.0.1 4000 80"))
            assert (status, body.split()[0]) == (200, b"198.51.100.7")
            # Later requests of the connection keep the first one's address...
            status, body = _ask(sock, _request("/addr"))
            assert (status, body.split()[0]) == (200, b"198.51.100.7")
            # ...and cannot set their own: a PROXY line there is not a request.
            status, body = _ask(sock, _request("/addr", proxy="TCP4 203.0.113.66 127.0.0.1 4000 80"))
            assert status == 400


def test_a_proxy_header_does_not_hide_the_sid_from_routing_and_survives_handoffs() -> None:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=4, extra_args=PROXY_ARGS) as srv:
        all_workers_serving(srv)
        sids = sessions_on_distinct_workers(srv.port, 3)
        path = "/socket.io/?EIO=4&transport=polling&sid={}"
        # The first request of each connection carries the PROXY header and a
        # sid owned by one of 3 workers: each must reach its owner.
        for n in range(16):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                request = _request(path.format(sids[n % 3]), proxy="TCP4 198.51.100.7 127.0.0.1 4000 80",
                                   method="POST", body=b"3")
                assert _ask(sock, request) == (200, b"OK"), f"request {n} (log: {srv.log_path})"
        # A connection handed to another worker after its first request keeps
        # that request's address, and its later requests still cannot set one.
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                status, body = _ask(sock, _request("/addr", proxy="TCP4 198.51.100.7 127.0.0.1 4000 80"))
                acceptor = int(body.split()[1])
                sid = next(s for s in sids if owner_pid(s) != acceptor)
                assert _ask(sock, _request(path.format(sid), method="POST", body=b"3")) == (200, b"OK")
                status, body = _ask(sock, _request("/addr"))
                assert body.split() == [b"198.51.100.7", str(owner_pid(sid)).encode()]
                status, body = _ask(sock, _request("/addr", proxy="TCP4 203.0.113.66 127.0.0.1 4000 80"))
                assert status == 400


V2 = proxy_header.V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(12)  # PROXY TCP4, 12 address bytes


@pytest.mark.parametrize(("data", "length"), [
    (b"GET / HTTP/1.1\r\n", 0),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n", 32),
    (b"PROXY TCP4 1.2.3.4", None),  # the rest of the line is still to come
    (b"PRO", None),
    (b"PROXY " + b"x" * 200, 0),  # no end within v1's 107 bytes: gunicorn refuses it
    (V2 + b"GET / HTTP/1.1\r\n", 28),
    (V2[:14], None),
    (b"\r\n\r\n\x00", None),
])
def test_where_a_proxy_header_ends(data: bytes, length: int | None) -> None:
    assert proxy_header.header_length(data) == length
