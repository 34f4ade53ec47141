"""permessage-deflate (RFC 7692) without context takeover: no zlib state kept per connection.

A zlib compressor with its window costs ~256 KB; keeping one per connection
is what makes deflate expensive in memory. Both directions are negotiated
with ``no_context_takeover``, so each message is (de)compressed on its own
and nothing stays allocated between messages. Small messages are sent
uncompressed (RSV1 clear), which RFC 7692 allows at any time.
"""
from __future__ import annotations

import zlib

from gunicorn_barrel.ws.frames import CLOSE_TOO_BIG, ProtocolError

_TAIL = b"\x00\x00\xff\xff"
_KNOWN_PARAMS = {
    "server_no_context_takeover", "client_no_context_takeover",
    "server_max_window_bits", "client_max_window_bits",
}


def negotiate(offers: str) -> str | None:
    """The Sec-WebSocket-Extensions answer to a client's offers, or None to decline them all."""
    for offer in offers.split(","):
        name, *params = [part.strip() for part in offer.split(";")]
        if name.lower() != "permessage-deflate":
            continue
        parsed = dict(_param(p) for p in params if p)
        if not set(parsed) <= _KNOWN_PARAMS:
            continue
        window = parsed.get("server_max_window_bits")
        if window is not None and window != "15":
            continue  # we compress with a 15-bit window only
        return "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    return None


def _param(text: str) -> tuple[str, str | None]:
    key, _, value = text.partition("=")
    return key.strip().lower(), value.strip().strip('"') or None


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15, 8)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(_TAIL) else out


def inflate(data: bytes, max_size: int) -> bytes:
    """Decompress one message; refuse (1009) one that inflates past ``max_size``."""
    decompressor = zlib.decompressobj(-15)
    try:
        out = decompressor.decompress(data + _TAIL, max_size + 1)
    except zlib.error as exc:
        raise ProtocolError(1007, f"bad deflate data: {exc}") from None
    if len(out) > max_size or decompressor.unconsumed_tail:
        raise ProtocolError(CLOSE_TOO_BIG, f"message inflates past {max_size} bytes")
    return out
