"""Engine.io session ids that name the worker holding the session, signed per instance.

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
import struct

_PID = struct.Struct("!I")
_RANDOM_BYTES = 12
_MAC_BYTES = 8
_RAW_LEN = _PID.size + _RANDOM_BYTES + _MAC_BYTES
_SID_LEN = len(base64.urlsafe_b64encode(b"\0" * _RAW_LEN))

_secret: bytes | None = None
_instance_tag: str | None = None

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


