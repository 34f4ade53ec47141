"""The bus wire format, sans-io: frames in, bytes out, and back. No sockets here.

A frame travels as a two-part zeromq message::

    part 0  topic    UTF-8 channel name; zeromq SUB sockets filter on its prefix
    part 1  body     header (38 bytes, big-endian) + msgpack payload

A worker may push up to ``MAX_BATCH`` frames of one channel as one message
(the topic, then their bodies); the broadcaster splits it and publishes
each frame on its own.

    header  magic b"BRL" | version u8 | flags u8 | reserved u8
            | origin (16 bytes) | seq u64 | base u64

``origin`` names the bus client that sent the frame and ``seq`` numbers that
client's frames of the channel, from 1. ``base`` is the lowest seq of the
channel the sender had not yet seen acknowledged when it sent the frame:
every frame below it was published. So a receiver (or a broadcaster) that
meets a sender's stream for the first time knows where it starts, even when
the first frames come late (``sequencing``). ``1 <= base <= seq``; the bus's
own unnumbered frames (heartbeats, NACKs) have seq 0 and base 0.

Versions: 1 had a 30-byte header without ``base``; 2 added it. A frame of
another version is refused (``UnsupportedVersion``), so every process of an
instance (and every federated peer and emitter) must run the same version.
The payload is a msgpack map with string keys: bytes stay
bytes (no base64), nothing is ever unpickled. A frame larger than the
configured limit is refused at both ends.
"""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

MAGIC = b"BRL"
VERSION = 2
_HEADER = struct.Struct("!3sBBB16sQQ")
_SEQ_BASE = struct.Struct("!QQ")
_SEQ_AT = 22  # offset of seq (then base) in the header
HEADER_SIZE = _HEADER.size
MAX_CHANNEL_BYTES = 255
MAX_DEPTH = 100
MAX_BATCH = 256
# Each bus client also subscribes to this prefix + its pid. Nothing is published
# there: the subscription itself tells the broadcaster (an XPUB) that this
# worker receives what it publishes from now on.
WORKER_TOPIC = b"\x00w"


def worker_topic(pid: int) -> bytes:
    return WORKER_TOPIC + str(pid).encode("ascii") + b"."


def worker_pid(topic: bytes) -> int | None:
    """The pid in a ``worker_topic``, or None for any other topic."""
    digits = bytes(topic)[len(WORKER_TOPIC):-1]
    if not topic.startswith(WORKER_TOPIC) or not topic.endswith(b".") or not digits.isdigit():
        return None
    return int(digits)


class WireError(ValueError):
    """A frame cannot be encoded or decoded."""


class FrameTooLarge(WireError):
    """A frame is over the configured size limit."""


class MalformedFrame(WireError):
    """Bytes that are not a valid frame of this version."""


class UnsupportedVersion(MalformedFrame):
    """A well-formed header carrying a version this code does not speak."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One bus message: who sent it, its number, its channel and its payload.

    ``base``: the sender's lowest unacknowledged seq of the channel (see above);
    0 only for an unnumbered frame (seq 0).
    """

    channel: str
    origin: bytes
    seq: int
    payload: Mapping[str, Any]
    base: int = 0


def _base_error(seq: int, base: int) -> str | None:
    """Why (seq, base) is not a valid pair, or None."""
    if base == seq == 0 or 1 <= base <= seq:
        return None
    return f"base {base} does not fit seq {seq} (1 <= base <= seq, or both 0)"


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack extension type {code} is not allowed")


_SCALARS = (str, bytes, int, float, bool, type(None))


def _check_values(value: Any, error: type[WireError], depth: int = 0) -> None:
    """Allow JSON-like data plus bytes: maps with string keys, lists, scalars.

    The same rule at both ends, so a sender never emits what receivers refuse.
    """
    if isinstance(value, _SCALARS):
        return
    if depth >= MAX_DEPTH:
        raise error(f"payload nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, msgpack.ExtType):
        raise error("msgpack extension types cannot travel on the bus")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(f"map keys must be strings, got {type(key).__name__}")
            _check_values(item, error, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_values(item, error, depth + 1)
    else:
        raise error(f"values of type {type(value).__name__} cannot travel on the bus")


def encode(frame: Frame, max_size: int) -> list[bytes]:
    """Encode ``frame`` into zeromq message parts; raise WireError if it cannot be."""
    topic = _encode_channel(frame.channel)
    if not isinstance(frame.origin, bytes):
        raise WireError(f"origin must be 16 bytes, got {type(frame.origin).__name__}")
    if len(frame.origin) != 16:
        raise WireError(f"origin must be 16 bytes, got {len(frame.origin)}")
    if not isinstance(frame.seq, int):
        raise WireError(f"seq must be an integer, got {type(frame.seq).__name__}")
    if not 0 <= frame.seq < 2**64:
        raise WireError(f"seq out of range: {frame.seq}")
    if not isinstance(frame.base, int):
        raise WireError(f"base must be an integer, got {type(frame.base).__name__}")
    reason = _base_error(frame.seq, frame.base)
    if reason is not None:
        raise WireError(reason)
    if not isinstance(frame.payload, dict):
        raise WireError(f"payload must be a dict, got {type(frame.payload).__name__}")
    try:
        _check_values(frame.payload, WireError)
    except WireError as exc:
        raise WireError(f"payload cannot be encoded: {exc}") from None
    try:
        packed = msgpack.packb(frame.payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"payload cannot be encoded: {exc}") from None
    body = _HEADER.pack(MAGIC, VERSION, 0, 0, frame.origin, frame.seq, frame.base) + packed
    size = len(topic) + len(body)
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes is over the limit of {max_size} bytes")
    return [topic, body]


def _encode_channel(channel: str) -> bytes:
    if not isinstance(channel, str) or not channel:
        raise WireError("channel must be a non-empty string")
    topic = channel.encode("utf-8")
    if len(topic) > MAX_CHANNEL_BYTES:
        raise WireError(f"channel name over {MAX_CHANNEL_BYTES} bytes")
    return topic


def check(parts: Sequence[bytes], max_size: int) -> None:
    """Validate size, framing and header without unpacking the payload.

    The broadcaster calls this on every frame it receives so that garbage
    never reaches the workers; it is cheap enough for the hot path.
    """
    if len(parts) != 2:
        raise MalformedFrame(f"expected 2 message parts, got {len(parts)}")
    topic, body = parts
    size = len(topic) + len(body)
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes is over the limit of {max_size} bytes")
    if not topic or len(topic) > MAX_CHANNEL_BYTES:
        raise MalformedFrame(f"channel of {len(topic)} bytes")
    try:
        bytes(topic).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("channel is not UTF-8") from None
    # The version first: another version's header may be shorter than ours.
    if len(body) > 3 and body[:3] == MAGIC and body[3] != VERSION:
        raise UnsupportedVersion(f"frame version {body[3]}, this code speaks {VERSION}")
    if len(body) <= HEADER_SIZE:
        raise MalformedFrame(f"body of {len(body)} bytes is shorter than a header and payload")
    if body[:3] != MAGIC:
        raise MalformedFrame("bad magic: not a barrel frame")
    reason = _base_error(*_SEQ_BASE.unpack_from(body, _SEQ_AT))
    if reason is not None:
        raise MalformedFrame(reason)


def split_batch(parts: Sequence[bytes]) -> list[list[bytes]]:
    """The frames of a pushed message: ``[topic, body]`` for each of its bodies.

    Only the shape is checked here; each frame still goes through ``check``.
    """
    if not 2 <= len(parts) <= MAX_BATCH + 1:
        raise MalformedFrame(f"expected a topic and 1 to {MAX_BATCH} bodies, got {len(parts)} parts")
    topic = parts[0]
    return [[topic, body] for body in parts[1:]]


def origin_and_seq(body: bytes) -> tuple[bytes, int]:
    """The origin and seq of a frame body that passed ``check``."""
    origin, seq, _base = origin_seq_base(body)
    return origin, seq


def origin_seq_base(body: bytes) -> tuple[bytes, int, int]:
    """The origin, seq and base of a frame body that passed ``check``."""
    _magic, _version, _flags, _reserved, origin, seq, base = _HEADER.unpack_from(body)
    return bytes(origin), int(seq), int(base)


def rebase(parts: Sequence[bytes], base: int) -> list[bytes]:
    """A sender's own encoded frame with a newer ``base`` (for a resend: what it
    learnt since is acknowledged need not be waited for). ``base`` must fit its seq."""
    topic, body = parts
    _origin, seq, _old = origin_seq_base(body)
    reason = _base_error(seq, base)
    if reason is not None:
        raise WireError(reason)
    return [topic, b"".join((body[:_SEQ_AT + 8], base.to_bytes(8, "big"), body[HEADER_SIZE:]))]


def decode(parts: Sequence[bytes], max_size: int, check_values: bool = True) -> Frame:
    """Decode zeromq message parts into a Frame; raise WireError on any defect.

    ``check_values=False`` skips the walk over the payload's values (the
    msgpack decoding itself still refuses extension types and non-string
    keys): for workers, which receive only what the broadcaster published
    after a full check.
    """
    check(parts, max_size)
    topic, body = parts
    try:
        channel = bytes(topic).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("channel is not UTF-8") from None
    _magic, _version, _flags, _reserved, origin, seq, base = _HEADER.unpack_from(body)
    try:
        payload = msgpack.unpackb(
            body[HEADER_SIZE:], raw=False, strict_map_key=True, ext_hook=_refuse_ext
        )
    except MalformedFrame:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        reason = str(exc) or type(exc).__name__
        raise MalformedFrame(f"payload is not valid msgpack: {reason}") from None
    if not isinstance(payload, dict):
        raise MalformedFrame(f"payload must be a map, got {type(payload).__name__}")
    if check_values:
        _check_values(payload, MalformedFrame)
    return Frame(channel=channel, origin=bytes(origin), seq=seq, payload=payload, base=base)
