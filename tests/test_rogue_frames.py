"""Hostile input at both doors: rogue frames on the bus's ipc socket, malformed engine.io requests.

Each test starts its own gunicorn -w 2 (tests.apps.sio_app:wsgi). A rogue
local process (plain pyzmq, here in the test) PUSHes garbage into
``<runtime_dir>/pull.sock``; a monitor SUB on ``pub.sock`` sees everything the
broadcaster publishes, so the test knows what got through (nothing but valid
frames) and when the broadcaster has read everything the rogue sent (a valid
"sentinel" frame, sent last on the same FIFO pipe, comes out). Malformed
engine.io / socket.io requests go over raw http.client, with timeouts.
"""
from __future__ import annotations

import http.client
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from gunicorn_barrel.bus import channels, wire
from tests.harness import Client, Gunicorn, gunicorn, pid_alive, spread_clients, wait_for

pytestmark = pytest.mark.integration

MAX_FRAME = 65536
ENV = {"BARREL_MAX_FRAME_SIZE": str(MAX_FRAME)}
FLOOD = 20_000
ROGUE_ORIGIN = b"R" * 16
FORGER_ORIGIN = b"F" * 16
SENTINEL_CHANNEL = "rogue-sentinel"  # no worker subscribes to it (nor to a prefix of it)
HTTP_TIMEOUT = 5.0


# --------------------------------------------------------------------------- bus helpers


def _frame(channel: str, origin: bytes, seq: int, payload: dict[str, Any]) -> list[bytes]:
    return wire.encode(wire.Frame(channel, origin, seq, payload, base=seq), 1 << 30)


class Monitor:
    """A SUB on the broadcaster's pub.sock that records every message it publishes."""

    def __init__(self, ctx: zmq.Context, runtime_dir: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # unbounded: keep every message of the flood
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect("ipc://" + str(Path(runtime_dir) / "pub.sock"))
        self.seen: list[list[bytes]] = []

    def drain(self) -> list[list[bytes]]:
        while True:
            try:
                self.seen.append(self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return self.seen

    def heartbeats(self) -> list[wire.Frame]:
        return [wire.decode(p, 1 << 30) for p in self.drain() if p[0] == channels.HEARTBEAT.encode()]

    def saw_sentinel(self, seq: int) -> bool:
        return any(
            p[0] == SENTINEL_CHANNEL.encode() and wire.origin_and_seq(p[1])[1] == seq for p in self.drain()
        )

    def close(self) -> None:
        self.sock.close()


class Rogue:
    """A local process's PUSH socket on the broadcaster's pull.sock; sends are bounded in time."""

    def __init__(self, ctx: zmq.Context, runtime_dir: str) -> None:
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)  # a blocked send raises zmq.Again, never hangs
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.connect("ipc://" + str(Path(runtime_dir) / "pull.sock"))
        self.sentinels = 0

    def send(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def barrier(self, monitor: Monitor, timeout: float = 30) -> None:
        """Send a valid sentinel frame and wait until the broadcaster publishes it.

        One PUSH -> PULL pipe is FIFO: once the sentinel is out, everything sent
        before it on this socket has been read (and refused or relayed).
        """
        self.sentinels += 1
        seq = self.sentinels
        self.send(_frame(SENTINEL_CHANNEL, ROGUE_ORIGIN, seq, {"n": seq}))
        wait_for(lambda: monitor.saw_sentinel(seq), timeout, f"sentinel {seq} published by the broadcaster")

    def close(self) -> None:
        self.sock.close()


@contextmanager
def _zmq_context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def _broadcast_reaches_every_client_once(clients: list[Client], sender: Client, timeout: float = 15) -> None:
    token = {"token": uuid.uuid4().hex}
    assert sender.call("broadcast", token) == "ok"
    wait_for(lambda: all(token in c.got("news") for c in clients), timeout, "the broadcast at every client")
    for c in clients:
        assert c.got("news").count(token) == 1, f"client on {c.pid} got {c.got('news')}"


def _one_client_per_worker(clients: list[Client]) -> list[Client]:
    by_pid: dict[int | None, Client] = {}
    for c in clients:
        by_pid.setdefault(c.pid, c)
    return list(by_pid.values())


def _worker_counters(clients: list[Client]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for c in _one_client_per_worker(clients):
        reply = c.call("bus_counters")
        out[reply["pid"]] = reply["counters"]
    return out


def _close(clients: list[Client]) -> None:
    for c in clients:
        c.close()


def _garbage(rnd: random.Random) -> list[bytes]:
    """Random message parts: random part count, sizes and bytes."""
    count = rnd.choice([1, 2, 2, 2, 3])
    return [rnd.randbytes(rnd.randint(0, 200)) for _ in range(count)]


# --------------------------------------------------------------------------- the bus door


def test_rogue_frames_are_refused_and_the_bus_keeps_working() -> None:
    rnd = random.Random(7)
    with gunicorn(workers=2, env=ENV) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            broadcaster = srv.broadcaster_pid()
            runtime_dir = srv.runtime_dir()
            with _zmq_context() as ctx:
                monitor = Monitor(ctx, runtime_dir)
                wait_for(monitor.heartbeats, 10, "the monitor's first heartbeat (its SUB is connected)")
                # A broadcast from each worker, so the heartbeats name the workers' origins.
                for sender in _one_client_per_worker(clients):
                    _broadcast_reaches_every_client_once(clients, sender)

                def origins_acked() -> set[str] | None:
                    origins = {k.split("/")[0] for hb in monitor.heartbeats() for k in hb.payload["acks"]}
                    return origins if len(origins) >= 2 else None

                worker_origins = wait_for(origins_acked, 10, "acks for both workers' frames")
                before = _worker_counters(clients)
                rogue = Rogue(ctx, runtime_dir)
                try:
                    # The first 10 refusals are logged in detail: one of each kind first.
                    valid = _frame("sio:socketio", ROGUE_ORIGIN, 1, {"a": 1})
                    crafted: list[list[bytes]] = []
                    wrong_version = bytearray(valid[1])
                    wrong_version[3] = wire.VERSION - 1  # a process not upgraded yet
                    crafted.append([valid[0], bytes(wrong_version)])
                    # Forged heartbeats acking every frame of every worker: they must never go out.
                    forged_acks = {f"{o}/sio:socketio": 2**40 for o in worker_origins}
                    crafted.append(_frame(channels.HEARTBEAT, FORGER_ORIGIN, 0, {"acks": forged_acks}))
                    crafted.append([b"\x00hb\x00", _frame("x", FORGER_ORIGIN, 1, {"acks": forged_acks})[1]])
                    # Each part under libzmq's per-part limit (MAXMSGSIZE), the frame over the bus's limit.
                    crafted.append([b"s" * 200, _frame("c", ROGUE_ORIGIN, 2, {"b": b"x" * 65_450})[1]])
                    crafted.append([rnd.randbytes(50)])
                    for cut in (0, 1, 3, 4, wire.HEADER_SIZE - 1, wire.HEADER_SIZE):
                        crafted.append([valid[0], valid[1][:cut]])  # truncated inside the header
                    crafted.append(valid[:1])  # the body part missing
                    crafted.append([b"", valid[1]])  # the topic empty
                    crafted.append([b"x" * 256, valid[1]])  # the topic too long
                    crafted.append([*valid, b"extra"])  # a batch with one bad body: refused whole
                    crafted.append([b"BRL\x01", valid[0], valid[1]])  # parts out of place
                    crafted.append([valid[0], b"BRM" + valid[1][3:]])  # bad magic
                    for parts in crafted:
                        assert all(len(p) < MAX_FRAME for p in parts)
                        rogue.send(parts)
                    rogue.barrier(monitor)
                    # The flood.
                    started = time.monotonic()
                    for _ in range(FLOOD):
                        rogue.send(_garbage(rnd))
                    rogue.barrier(monitor, timeout=60)
                    flood_seconds = time.monotonic() - started
                finally:
                    rogue.close()

                # A part over MAXMSGSIZE: libzmq cuts the rogue's connection before Python sees it.
                big = Rogue(ctx, runtime_dir)
                try:
                    big.send([b"sio:socketio", b"BRL\x01" + b"x" * 70_000])
                finally:
                    big.close()
                # A new peer is still served after that.
                after_big = Rogue(ctx, runtime_dir)
                try:
                    after_big.barrier(monitor)
                finally:
                    after_big.close()

                # Nothing but valid frames came out, and nothing from the forger.
                for parts in monitor.drain():
                    frame = wire.decode(parts, MAX_FRAME)  # raises on garbage
                    assert frame.origin != FORGER_ORIGIN, f"a forged frame was published: {frame}"
                    if frame.origin == ROGUE_ORIGIN:
                        assert frame.channel == SENTINEL_CHANNEL, f"a rogue frame was published: {frame}"
                epochs = {hb.origin for hb in monitor.heartbeats()}
                monitor.close()
            assert len(epochs) <= 1, "the broadcaster restarted (a new epoch)"
            print(f"rogue: {len(crafted)} crafted + {FLOOD} garbage frames read in {flood_seconds:.1f} s")

            assert srv.broadcaster_pids() == [broadcaster] and pid_alive(broadcaster)
            assert all(c.sio.connected for c in clients)
            for sender in _one_client_per_worker(clients):
                _broadcast_reaches_every_client_once(clients, sender)
            after = _worker_counters(clients)
            assert set(after) == set(before) and len(after) == 2
            for pid, counters in after.items():
                assert counters.get("frames_refused", 0) == 0, f"garbage reached worker {pid}: {counters}"
                assert counters.get("gaps", 0) == 0, f"worker {pid}: {counters}"
                assert counters.get("broadcaster_restarts_seen", 0) == 0, f"worker {pid}: {counters}"
            log = srv.log()
            refusals = re.findall(r"refused a frame: (.*)", log)
            assert len(refusals) == 10, f"the broadcaster logs only the first 10 refusals: {refusals}"
            old_version = f"frame version {wire.VERSION - 1}, this code speaks {wire.VERSION}"
            assert any(old_version in r for r in refusals), refusals
            assert any("channels starting with NUL" in r for r in refusals), refusals
            assert any("over the limit of 65536 bytes" in r for r in refusals), refusals
            assert "bus frame refused" not in log
        finally:
            _close(clients)
    # The broadcaster's final counters (logged when it stops) count every refusal.
    counts = wait_for(lambda: re.findall(r"broadcaster \d+ stopped; counters (\{.*\})", srv.log()), 10,
                      "the broadcaster's final counters")
    refused = int(re.search(r"'frames_refused': (\d+)", counts[-1]).group(1))  # type: ignore[union-attr]
    assert refused == len(crafted) + FLOOD, counts[-1]  # the 70,000-byte part never reached Python


def test_valid_headers_with_garbage_payloads_or_topics_never_reach_a_worker() -> None:
    with gunicorn(workers=2, env=ENV) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            runtime_dir = srv.runtime_dir()
            valid = _frame("sio:socketio", ROGUE_ORIGIN, 1, {"method": "emit", "event": "news"})
            with _zmq_context() as ctx:
                monitor = Monitor(ctx, runtime_dir)
                wait_for(monitor.heartbeats, 10, "the monitor's first heartbeat")
                rogue = Rogue(ctx, runtime_dir)
                try:
                    rogue.send([valid[0], valid[1][:-3]])  # truncated inside the payload
                    rogue.send([valid[0], valid[1][: wire.HEADER_SIZE] + b"\xc1"])  # not msgpack
                    rogue.send([valid[0], valid[1][: wire.HEADER_SIZE] + msgpack.packb([1])])  # not a map
                    rogue.send([b"sio:socketio\xff", valid[1]])  # a non-UTF-8 topic
                    rogue.barrier(monitor)
                finally:
                    rogue.close()
                monitor.close()
            _broadcast_reaches_every_client_once(clients, clients[0])
            for pid, counters in _worker_counters(clients).items():
                assert counters.get("frames_refused", 0) == 0, f"garbage reached worker {pid}: {counters}"
        finally:
            _close(clients)


# --------------------------------------------------------------------------- the http door


def _request(srv: Gunicorn, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on its own connection; no answer within HTTP_TIMEOUT is an assertion, not a hang."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT)
    try:
        headers = {"Content-Type": "text/plain;charset=UTF-8"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except TimeoutError:
        raise AssertionError(f"{method} {path} {body!r}: no answer within {HTTP_TIMEOUT} s") from None
    finally:
        conn.close()


def _clean_error(srv: Gunicorn, method: str, path: str, body: bytes | None = None) -> bytes:
    status, answer = _request(srv, method, path, body)
    assert 400 <= status < 500, f"{method} {path} {body!r}: {status} {answer[:200]!r}"
    return answer


def _polling_session(srv: Gunicorn) -> str:
    """Open an engine.io polling session; return its URL path (with the sid)."""
    status, answer = _request(srv, "GET", "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and answer[:1] == b"0", answer
    sid = json.loads(answer[1:])["sid"]
    return f"/socket.io/?EIO=4&transport=polling&sid={sid}"


def _post_ok(srv: Gunicorn, path: str, body: bytes) -> None:
    status, answer = _request(srv, "POST", path, body)
    assert status == 200 and answer == b"OK", f"POST {body!r}: {status} {answer[:200]!r}"


def _poll(srv: Gunicorn, path: str) -> bytes:
    """A GET on the session: only after something was queued for it (else it long-polls)."""
    status, answer = _request(srv, "GET", path)
    assert status == 200, f"GET: {status} {answer[:200]!r}"
    return answer


def _connected_session(srv: Gunicorn) -> str:
    path = _polling_session(srv)
    _post_ok(srv, path, b"40")
    assert _poll(srv, path).startswith(b"40{"), "socket.io CONNECT to / refused"
    return path


def _no_server_errors(srv: Gunicorn) -> None:
    log = srv.log()
    assert "Error handling request" not in log, log[-3000:]


def test_malformed_engineio_and_socketio_requests_get_clean_answers() -> None:
    with gunicorn(workers=2, env=ENV) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            # engine.io handshakes it does not speak.
            assert b"unsupported version" in _clean_error(srv, "GET", "/socket.io/?EIO=99&transport=polling")
            assert b"unsupported version" in _clean_error(srv, "GET", "/socket.io/?EIO=x&transport=polling")
            assert b"unsupported version" in _clean_error(srv, "GET", "/socket.io/?EIO=3&transport=polling")
            assert b"Invalid transport" in _clean_error(srv, "GET", "/socket.io/?EIO=4&transport=bogus")
            _clean_error(srv, "GET", "/socket.io/?EIO=4&transport=websocket")  # no Upgrade header
            _clean_error(srv, "GET", "/socket.io/?EIO=4&transport=polling&j=abc")
            # Sessions that do not exist.
            polling = "/socket.io/?EIO=4&transport=polling"
            assert b"Invalid session" in _clean_error(srv, "GET", polling + "&sid=nope")
            assert b"Invalid session" in _clean_error(srv, "POST", polling, b"40")
            _clean_error(srv, "POST", polling + "&sid=" + "A" * 32, b"40")
            # A method engine.io does not serve.
            _clean_error(srv, "PUT", "/socket.io/?EIO=4&transport=polling", b"40")

            # socket.io CONNECT to a namespace the app does not have: a CONNECT_ERROR packet.
            session = _polling_session(srv)
            _post_ok(srv, session, b"40/nope,")
            answer = _poll(srv, session)
            assert answer.startswith(b"44/nope,"), answer
            # The session itself is fine: CONNECT to / works.
            _post_ok(srv, session, b"40")
            assert _poll(srv, session).startswith(b"40{")

            # Malformed socket.io packets on a connected session: ignored, the session keeps working.
            session = _connected_session(srv)
            for packet in (b"4zz", b"42", b"42[1,2", b"49", b"43", b'42/nope,["x"]', b"4\xc3\xa9", b"4{",
                           b"b!!!", b"\x1e\x1e", b"4" * 2000, b"\x1e".join([b"2"] * 20)):
                status, answer = _request(srv, "POST", session, packet)
                assert status < 500, f"POST {packet!r}: {status} {answer[:200]!r}"
            _post_ok(srv, session, b'420["whoami"]')
            reply = _poll(srv, session)
            assert reply.startswith(b"430["), reply
            assert json.loads(reply[3:])[0]["sid"]

            # A POST whose body is not even UTF-8: never a 5xx, the session still works after it.
            session = _polling_session(srv)
            status, answer = _request(srv, "POST", session, b"\xff\xfe garbage")
            assert status < 500, (status, answer)
            _post_ok(srv, session, b"40")
            assert _poll(srv, session).startswith(b"40{")

            # Nobody else noticed.
            assert all(c.sio.connected for c in clients)
            for sender in _one_client_per_worker(clients):
                _broadcast_reaches_every_client_once(clients, sender)
            _no_server_errors(srv)
        finally:
            _close(clients)


def test_a_garbage_engineio_payload_gets_a_4xx() -> None:
    with gunicorn(workers=2, env=ENV) as srv:
        session = _polling_session(srv)
        _clean_error(srv, "POST", session, b"\xff\xfe garbage")


def test_an_unknown_engineio_packet_type_gets_a_prompt_4xx() -> None:
    with gunicorn(workers=2, env=ENV) as srv:
        session = _polling_session(srv)
        _clean_error(srv, "POST", session, b"9zzz")


def test_a_post_after_the_client_closed_its_session_gets_a_4xx() -> None:
    with gunicorn(workers=2, env=ENV) as srv:
        session = _polling_session(srv)
        _post_ok(srv, session, b"1")
        _clean_error(srv, "POST", session, b"40")
