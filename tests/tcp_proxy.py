"""A TCP proxy on loopback for tests: a load balancer that the test can switch and cut.

Each accepted connection is joined to the backend chosen at that moment;
``switch`` changes the backend for new connections, ``cut`` closes every
joined connection at once (both ends), as a failing network path or a load
balancer restart would. Threads, one pair per connection, all daemon, all
ended by ``close``.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TcpProxy:
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._joined: list[socket.socket] = []
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def switch(self, backend_port: int) -> None:
        """New connections go to ``backend_port`` from now on."""
        self.backend_port = backend_port

    def cut(self) -> int:
        """Close every joined connection (both sides); how many pairs there were."""
        with self._lock:
            joined, self._joined = self._joined, []
        for sock in joined:
            _shut(sock)
        return len(joined) // 2

    def close(self) -> None:
        self._closed = True
        _shut(self._listener)
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=5)
            except OSError:
                _shut(client)
                continue
            backend.settimeout(None)
            with self._lock:
                self._joined += [client, backend]
                self.accepted += 1
            for src, dst in ((client, backend), (backend, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        _shut(src)
        _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextmanager
def tcp_proxy(backend_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(backend_port)
    try:
        yield proxy
    finally:
        proxy.close()
