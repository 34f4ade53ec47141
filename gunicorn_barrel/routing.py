"""Which worker owns an engine.io request: owner-tagged session ids, request peeking.

Every engine.io session id made in a barrel worker carries the pid of the
worker that holds the session and a MAC keyed by a secret of this gunicorn
instance::

    sid = base64url( pid u32 | 12 random bytes | HMAC-SHA256(secret, pid|random)[:8] )

A worker peeks (MSG_PEEK, nothing consumed) at the request line of each
request on a connection; when its ``sid`` names another live worker, the
connection is handed over whole (see ``handoff``). A sid without a valid MAC
(forged, garbage, or from another instance) names no one: the request is
answered locally, by engine.io's usual 400 for an unknown session.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import socket
import struct
import weakref
from typing import Any
from urllib.parse import parse_qs

import gevent

_PID = struct.Struct("!I")
_RANDOM_BYTES = 12
_MAC_BYTES = 8
_RAW_LEN = _PID.size + _RANDOM_BYTES + _MAC_BYTES
_SID_LEN = len(base64.urlsafe_b64encode(b"\0" * _RAW_LEN))

MAX_REQUEST_LINE = 8192
_PARTIAL_LINE_POLL = 0.005

_secret: bytes | None = None
_instance_tag: str | None = None
# engine.io servers that issued sessions in this process (for their limits)
_servers: weakref.WeakSet[Any] = weakref.WeakSet()
ENGINEIO_DEFAULT_MAX_HTTP_BUFFER = 1_000_000


def set_secret(secret: bytes) -> None:
    """Set this instance's MAC key (the arbiter does it before forking workers)."""
    global _secret, _instance_tag
    if len(secret) < 16:
        raise ValueError("the routing secret must have at least 16 bytes")
    _secret = secret
    _instance_tag = None


def _key() -> bytes:
    if _secret is None:
        raise RuntimeError("barrel routing has no secret: the barrel hooks did not run")
    return _secret


def _mac(body: bytes) -> bytes:
    return hmac.new(_key(), body, hashlib.sha256).digest()[:_MAC_BYTES]


def instance_tag() -> str:
    """A short name of this gunicorn instance, the same in all its workers (derived from the key)."""
    global _instance_tag
    if _instance_tag is None:  # once per key: it names a channel at every emit to one worker
        _instance_tag = hmac.new(_key(), b"instance tag", hashlib.sha256).hexdigest()[:12]
    return _instance_tag


def new_sid(pid: int | None = None) -> str:
    """A fresh engine.io session id owned by ``pid`` (this process by default)."""
    body = _PID.pack(os.getpid() if pid is None else pid) + secrets.token_bytes(_RANDOM_BYTES)
    return base64.urlsafe_b64encode(body + _mac(body)).decode("ascii")


def owner_of(sid: str) -> int | None:
    """The pid a session id names, or None when it is not a valid barrel sid."""
    if len(sid) != _SID_LEN:
        return None
    try:
        raw = base64.urlsafe_b64decode(sid.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(raw) != _RAW_LEN or not hmac.compare_digest(mac, _mac(body)):
        return None
    return int(_PID.unpack_from(body)[0])


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


def peek_request_line(sock: socket.socket) -> bytes | None:
    """Wait for the next request's first line without consuming it.

    Returns None when the peer closed the connection. A line longer than
    MAX_REQUEST_LINE is returned truncated; gunicorn's parser then refuses it.
    Callers bound the wait (gunicorn's keepalive timeout).
    """
    while True:
        data = sock.recv(MAX_REQUEST_LINE, socket.MSG_PEEK)
        if not data:
            return None
        end = data.find(b"\r\n")
        if end >= 0:
            return data[:end]
        if len(data) >= MAX_REQUEST_LINE:
            return data
        # Part of a line is in: the socket stays readable while we only
        # peek, so wait a little rather than spin on it.
        gevent.sleep(_PARTIAL_LINE_POLL)


def owner_of_request(line: bytes) -> int | None:
    """The pid of the worker owning the session a request line names, if any."""
    sid = sid_in_request_line(line)
    return owner_of(sid) if sid is not None else None


def tag_engineio_sessions() -> None:
    """Make every engine.io server in this process issue owner-tagged session ids.

    A class attribute, so servers created before the call (--preload) are
    covered too. python-socketio also draws its namespace sids from here.
    """
    from engineio.base_server import BaseServer

    def generate_id(self: BaseServer) -> str:
        _servers.add(self)
        return new_sid()

    BaseServer.generate_id = generate_id  # type: ignore[method-assign]


def max_http_buffer_size() -> int:
    """The largest request body the engine.io servers of this worker accept."""
    sizes = [getattr(server, "max_http_buffer_size", 0) or 0 for server in list(_servers)]
    return max(sizes, default=ENGINEIO_DEFAULT_MAX_HTTP_BUFFER) or ENGINEIO_DEFAULT_MAX_HTTP_BUFFER
