"""Who may hand a connection to a worker, and what a worker does with a bad descriptor.

The handoff socket (gunicorn_barrel/worker/handoff.py) takes client
connections from the other workers of the same arbiter only (SO_PEERCRED);
a descriptor that is not a stream socket is closed and the receiver goes on.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket

from gunicorn_barrel.worker.handoff import HandoffReceiver, endpoint
from tests.harness import gunicorn, wait_for

FORGED = {"addr": ["203.0.113.66", 1], "listener": 0}


@pytest.mark.integration
def test_a_process_that_is_not_a_worker_cannot_inject_a_connection() -> None:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=2) as srv:
        target = srv.worker_pids()[0]
        path = endpoint(srv.runtime_dir(), target)
        wait_for(lambda: os.path.exists(path), 10, "the worker's handoff socket")
        ours, theirs = socket.socketpair()
        ours.settimeout(10)
        ours.sendall(b"GET /addr HTTP/1.1\r\nHost: x\r\n\r\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as handoff:
            handoff.settimeout(10)
            handoff.connect(path)
            try:
                socket.send_fds(handoff, [json.dumps(FORGED).encode()], [theirs.fileno()])
            except OSError:
                pass  # refused before we could send: as good
            theirs.close()
            # Refused: the worker closes our handoff connection, and what we sent with it, unread.
            try:
                handoff.recv(1)
            except (ConnectionResetError, TimeoutError):
                pass  # closed with our message in it; or not closed, which the answer shows
        try:
            answer = ours.recv(65536)
        except ConnectionResetError:  # closed with our request unread
            answer = b""
        ours.close()
        assert answer == b"", f"served a connection from a non-worker: {answer[:200]!r}"
        wait_for(lambda: "handoff connection refused" in srv.log(), 10, "the refusal in the log")
        assert f"is not a worker of this arbiter (its parent is {os.getppid()})" in srv.log()


def test_a_descriptor_that_is_not_a_socket_is_closed_and_the_receiver_goes_on(tmp_path: Path) -> None:
    adopted: list[tuple[object, object]] = []
    receiver = HandoffReceiver(str(tmp_path), lambda sock, addr, index, conn: adopted.append((sock, addr)))
    peer = gsocket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_end, write_end = os.pipe()
    client, other = socket.socketpair()
    try:
        peer.connect(receiver.path)
        socket.send_fds(peer, [json.dumps(FORGED).encode()], [read_end])
        os.close(read_end)

        def pipe_closed_by_receiver() -> bool:
            gevent.sleep(0.01)  # let the receiver's greenlets run
            try:
                os.write(write_end, b"x")
            except BrokenPipeError:
                return True
            return False

        wait_for(pipe_closed_by_receiver, 10, "the receiver to close the pipe it got", interval=0)
        # The same connection still works for a real socket.
        socket.send_fds(peer, [json.dumps(FORGED).encode()], [client.fileno()])

        def adopted_one() -> bool:
            gevent.sleep(0.01)
            return bool(adopted)

        wait_for(adopted_one, 10, "the socket sent after the pipe to be adopted", interval=0)
        assert adopted[0][1] == ("203.0.113.66", 1)
        assert receiver.received == 1
    finally:
        for sock, _addr in adopted:
            sock.close()  # type: ignore[attr-defined]
        peer.close()
        client.close()
        other.close()
        os.close(write_end)
        receiver.close()
