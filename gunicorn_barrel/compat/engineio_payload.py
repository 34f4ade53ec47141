"""Patch of engine.io's polling payload decoder: no cap on the number of packets in a POST.

python-engineio decodes a polling POST with ``Payload.max_decode_packets``
(a class attribute, 16 in 4.x) and raises "Too many packets in payload" past
it; the server then answers 200 and every event of that POST is lost.
socket.io-client batches whatever was emitted while a POST was in flight
into the next one, so a burst of emits over polling hits it. Node's
engine.io has no such cap, only a byte limit.

The cap is not needed for safety here: a POST body is bounded in bytes by
``max_http_buffer_size`` (engine.io checks ``CONTENT_LENGTH`` and barrel's
request checks refuse larger and chunked bodies before engine.io reads
them), and barrel refuses payloads with an empty packet, so a body of N
bytes holds at most N/2 + 1 packets, each costing what a WebSocket frame
of the same bytes would.
"""
from __future__ import annotations

import sys

from gunicorn_barrel.compat.versions import IncompatibleLibrary

ENGINEIO = "python-engineio"
# Packets in the payload decoded once at start to check that the cap is gone.
_PROBE_PACKETS = 1000


def check() -> None:
    """The cap is still the integer class attribute ``engineio.payload.Payload.max_decode_packets``."""
    from engineio import payload

    limit = getattr(payload.Payload, "max_decode_packets", None)
    if not isinstance(limit, int):
        raise IncompatibleLibrary(
            ENGINEIO,
            f"engineio.payload.Payload.max_decode_packets is no longer an integer (found {limit!r})")


def install() -> None:
    """Let engine.io decode a polling POST of any number of packets (its byte limit still holds)."""
    from engineio import payload

    payload.Payload.max_decode_packets = sys.maxsize
    # The attribute may still exist while another check took over: decode a
    # payload over the old cap once, so that such a change fails at worker start.
    try:
        decoded = payload.Payload(encoded_payload="\x1e".join(["4x"] * _PROBE_PACKETS))
    except ValueError as exc:
        raise IncompatibleLibrary(
            ENGINEIO,
            f"engine.io still refuses a polling payload of {_PROBE_PACKETS} packets ({exc})") from None
    if [p.data for p in decoded.packets] != ["x"] * _PROBE_PACKETS:
        raise IncompatibleLibrary(ENGINEIO, "engine.io decoded a probe payload into other packets")
