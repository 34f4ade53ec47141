"""Which worker owns an engine.io request: the request line, peeked, and the worker its sid names.

A worker peeks (MSG_PEEK, nothing consumed) at the request line of each
request on a connection; when its ``sid`` names another live worker (see
``runtime.sids``; engine.io makes such sids through
``compat.engineio_sessions``), the connection is handed over whole (see
``handoff``).
"""
from __future__ import annotations

import socket
from urllib.parse import parse_qs

import gevent

from gunicorn_barrel.runtime.sids import owner_of
from gunicorn_barrel.worker import proxy_header

MAX_REQUEST_LINE = 8192
_MAX_PROXY_HEADER = 1024
_PARTIAL_LINE_POLL = 0.005


def sid_in_request_line(line: bytes) -> str | None:
    """The engine.io ``sid`` query parameter of an HTTP request line, if any."""
    parts = line.split(b" ")
    if len(parts) != 3 or b"?" not in parts[1]:
        return None
    query = parts[1].split(b"?", 1)[1].split(b"#", 1)[0]
    try:
        params = parse_qs(query.decode("latin-1"), max_num_fields=32)
    except ValueError:
        return None
    if "EIO" not in params or len(params.get("sid", ())) != 1:
        return None
    return params["sid"][0]


def peek_request_line(sock: socket.socket, after_proxy_header: bool = False) -> bytes | None:
    """Wait for the next request's first line without consuming it.

    Returns None when the peer closed the connection. A line longer than
    MAX_REQUEST_LINE is returned truncated; gunicorn's parser then refuses it.
    With ``after_proxy_header`` (a connection's first request under
    gunicorn's proxy_protocol), a PROXY header before the line is skipped.
    Callers bound the wait (gunicorn's keepalive timeout).
    """
    size = MAX_REQUEST_LINE + (_MAX_PROXY_HEADER if after_proxy_header else 0)
    while True:
        data = sock.recv(size, socket.MSG_PEEK)
        if not data:
            return None
        start = proxy_header.header_length(data) if after_proxy_header else 0
        if start is not None:
            end = data.find(b"\r\n", start)
            if end >= 0:
                return data[start:end]
            if len(data) >= size:
                return data[start:]
        # Part of a line is in: the socket stays readable while we only
        # peek, so wait a little rather than spin on it.
        gevent.sleep(_PARTIAL_LINE_POLL)


def owner_of_request(line: bytes) -> int | None:
    """The pid of the worker owning the session a request line names, if any."""
    sid = sid_in_request_line(line)
    return owner_of(sid) if sid is not None else None

