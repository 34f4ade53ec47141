"""Where a PROXY protocol header ends in the first bytes of a connection, sans-io.

With gunicorn's ``proxy_protocol`` on, a connection's first request may be
preceded by a PROXY header (v1 text or v2 binary); gunicorn parses it in the
first request only. The routing peek must look past it to find the request
line and its ``sid``; it consumes nothing, gunicorn's parser still reads it.
"""
from __future__ import annotations

import struct

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's limit)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version/command, family, length


def header_length(data: bytes) -> int | None:
    """Bytes of the PROXY header at the start of ``data``: 0 if none, None if more bytes are needed.

    A malformed header counts as none: gunicorn's parser refuses it.
    """
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        return None if len(data) < V1_MAX else 0
    if data.startswith(V2_SIGNATURE):
        if len(data) < _V2_FIXED:
            return None
        return _V2_FIXED + int(struct.unpack_from("!H", data, 14)[0])
    if V1_PREFIX.startswith(data) or V2_SIGNATURE.startswith(data):
        return None  # too short to tell
    return 0
