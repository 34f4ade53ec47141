"""permessage-deflate (RFC 7692) without context takeover: no zlib state kept per connection.

A zlib compressor with its window costs ~256 KB; keeping one per connection
is what makes deflate expensive in memory. Both directions are negotiated
with ``no_context_takeover``, so each message is (de)compressed on its own
and nothing stays allocated between messages. Small messages are sent
uncompressed (RSV1 clear), which RFC 7692 allows at any time.

A client may ask for a smaller server window (``server_max_window_bits``,
8 to 15): granted, and messages to it are compressed with that window.
zlib refuses a raw 8-bit window (and turns 8 into 9 in its own format);
its 9-bit window is used for 8 instead, which is within the limit because
zlib's matches reach back at most the window size less 262 bytes (its
MIN_LOOKAHEAD): 250 bytes with 9 bits, under the 256 of 8 bits.
"""
from __future__ import annotations

import dataclasses
import zlib

from gunicorn_barrel.ws.frames import CLOSE_TOO_BIG, ProtocolError

_TAIL = b"\x00\x00\xff\xff"
_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")
_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))  # RFC 7692: 8 to 15, no leading zero
_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@dataclasses.dataclass(frozen=True)
class Agreement:
    """permessage-deflate as negotiated: the answer to send, the window to compress with."""

    answer: str
    window_bits: int = 15


def negotiate(offers: str) -> Agreement | None:
    """What to answer a client's Sec-WebSocket-Extensions offers, or None to decline them all.

    The first acceptable permessage-deflate offer is taken. An offer is
    declined (RFC 7692 section 7.1) when it has a parameter not defined for
    offers, a parameter twice, or a bad value.
    """
    for offer in offers.split(","):
        name, *params = [part.strip() for part in offer.split(";")]
        if name.lower() != "permessage-deflate":
            continue
        parsed = _offer_params(params)
        if parsed is None:
            continue
        window = parsed.get("server_max_window_bits")
        if window is None:
            return Agreement(_ANSWER)
        # RFC 7692 7.1.2.1: accepted by answering it (with this value or a smaller one)
        return Agreement(f"{_ANSWER}; server_max_window_bits={window}", int(window))
    return None


def _offer_params(params: list[str]) -> dict[str, str | None] | None:
    """An offer's parameters by name, or None if RFC 7692 says to decline it."""
    parsed: dict[str, str | None] = {}
    for text in filter(None, params):  # "permessage-deflate;" has an empty one
        key, eq, value = (part.strip() for part in text.partition("="))
        key = key.lower()
        if key in parsed:
            return None  # a parameter twice
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # a quoted-string value means the same as the token
        if key in _FLAGS:
            if eq:
                return None  # these take no value
        elif key == "server_max_window_bits":
            if value not in _WINDOW_BITS:
                return None  # a value is required
        elif key == "client_max_window_bits":
            if eq and value not in _WINDOW_BITS:
                return None  # the value is optional, but must be valid
        else:
            return None  # not defined for an offer
        parsed[key] = value if eq else None
    return parsed


def compress(data: bytes, window_bits: int = 15) -> bytes:
    """One message compressed on its own, back-references within ``2 ** window_bits`` bytes."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -max(window_bits, 9), 8)
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
