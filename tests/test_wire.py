"""Unit tests for the sans-io bus wire format (gunicorn_barrel.bus.wire)."""
from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_barrel.bus import wire

ORIGIN = bytes(range(16))
BIG = 1 << 30  # a max_size that no test payload reaches


def _typed(value: Any) -> Any:
    """``value`` with every leaf tagged by its type, so ``==`` also compares types.

    Plain ``==`` would accept True == 1, 1 == 1.0 and b"a" != "a" mix-ups going
    unnoticed in one direction or the other; this does not.
    """
    if isinstance(value, dict):
        return ("dict", {_typed(k): _typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _body(packed_payload: bytes, *, magic: bytes = wire.MAGIC, version: int = wire.VERSION,
          seq: int = 7, base: int = 5) -> bytes:
    return wire._HEADER.pack(magic, version, 0, 0, ORIGIN, seq, base) + packed_payload


def _parts(payload: object, topic: bytes = b"room") -> list[bytes]:
    return [topic, _body(msgpack.packb(payload, use_bin_type=True))]


def _round_trip(frame: wire.Frame) -> wire.Frame:
    return wire.decode(wire.encode(frame, BIG), BIG)


# --------------------------------------------------------------------------- round trip


def test_round_trip_keeps_every_field() -> None:
    frame = wire.Frame(channel="chat/room-1", origin=ORIGIN, seq=42, payload={"event": "msg"}, base=40)
    assert _round_trip(frame) == frame


def test_encode_produces_topic_and_body_parts() -> None:
    topic, body = wire.encode(wire.Frame("room", ORIGIN, 5, {}, base=3), BIG)
    assert topic == b"room"
    assert wire.HEADER_SIZE == 38
    assert body[:3] == wire.MAGIC
    assert body[3] == wire.VERSION == 2
    assert body[6:22] == ORIGIN
    assert int.from_bytes(body[22:30], "big") == 5
    assert int.from_bytes(body[30:38], "big") == 3
    assert len(body) > wire.HEADER_SIZE
    assert wire.origin_seq_base(body) == (ORIGIN, 5, 3)
    assert wire.origin_and_seq(body) == (ORIGIN, 5)


def test_round_trip_of_rich_payload_keeps_types() -> None:
    payload: dict[str, Any] = {
        "blob": b"\x00\xff raw",
        "nested": {"deeper": [b"in a list", {"k": b"in a map in a list"}]},
        "text": "héllo wörld ✓ 🎉",
        "int": -(2**63),
        "big": 2**64 - 1,
        "float": 3.5,
        "none": None,
        "yes": True,
        "no": False,
        "list": [1, "two", 3.0, None, [], {}],
        "empty_bytes": b"",
        "empty_str": "",
    }
    decoded = _round_trip(wire.Frame("c", ORIGIN, 1, payload, base=1))
    assert _typed(decoded.payload) == _typed(payload)
    assert type(decoded.payload["nested"]["deeper"][0]) is bytes
    assert decoded.payload["yes"] is True


def test_round_trip_of_empty_payload() -> None:
    frame = wire.Frame("c", ORIGIN, 0, {}, base=0)
    assert _round_trip(frame) == frame


def test_round_trip_of_unicode_channel_and_extreme_seq() -> None:
    frame = wire.Frame("салон/部屋", ORIGIN, 2**64 - 1, {"a": 1}, base=1)
    assert _round_trip(frame) == frame


def test_channel_of_exactly_255_bytes_is_accepted() -> None:
    frame = wire.Frame("x" * wire.MAX_CHANNEL_BYTES, ORIGIN, 1, {}, base=1)
    assert _round_trip(frame) == frame


def test_frame_of_exactly_max_size_is_accepted_at_both_ends() -> None:
    parts = wire.encode(wire.Frame("c", ORIGIN, 1, {"data": b"x" * 100}, base=1), BIG)
    size = len(parts[0]) + len(parts[1])
    assert wire.encode(wire.Frame("c", ORIGIN, 1, {"data": b"x" * 100}, base=1), size) == parts
    wire.check(parts, size)
    assert wire.decode(parts, size).payload == {"data": b"x" * 100}


# --------------------------------------------------------------------------- properties

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8"))
    | st.binary()
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(st.characters(codec="utf-8")), children, max_size=5),
    max_leaves=30,
)
_payloads = st.dictionaries(st.text(st.characters(codec="utf-8")), _values, max_size=8)
_channels = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(
    lambda s: len(s.encode("utf-8")) <= wire.MAX_CHANNEL_BYTES
)


@given(
    channel=_channels,
    origin=st.binary(min_size=16, max_size=16),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    payload=_payloads,
    data=st.data(),
)
def test_any_msgpack_safe_frame_round_trips(channel: str, origin: bytes, seq: int, payload: dict,
                                            data: st.DataObject) -> None:
    base = data.draw(st.integers(min_value=min(seq, 1), max_value=seq))
    frame = wire.Frame(channel, origin, seq, payload, base=base)
    decoded = _round_trip(frame)
    assert (decoded.channel, decoded.origin, decoded.seq, decoded.base) == (channel, origin, seq, base)
    assert _typed(decoded.payload) == _typed(payload)


def _decode_or_wire_error(parts: list[bytes], max_size: int) -> None:
    try:
        frame = wire.decode(parts, max_size)
    except wire.WireError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
    else:
        assert isinstance(frame, wire.Frame)
        assert isinstance(frame.payload, dict)


@given(parts=st.lists(st.binary(max_size=80), max_size=4), max_size=st.integers(0, 200))
def test_decode_of_arbitrary_parts_raises_only_wire_errors(parts: list[bytes], max_size: int) -> None:
    _decode_or_wire_error(parts, max_size)


@given(topic=st.binary(max_size=300), rest=st.binary(max_size=200))
def test_decode_of_valid_header_and_arbitrary_payload_raises_only_wire_errors(
    topic: bytes, rest: bytes
) -> None:
    _decode_or_wire_error([topic, _body(rest)], BIG)


@given(topic=st.binary(min_size=1, max_size=10), header=st.binary(min_size=38, max_size=38),
       rest=st.binary(max_size=50))
def test_decode_of_arbitrary_header_raises_only_wire_errors(topic: bytes, header: bytes, rest: bytes) -> None:
    _decode_or_wire_error([topic, wire.MAGIC + header[3:] + rest], BIG)


@given(parts=st.lists(st.binary(max_size=80), max_size=4), max_size=st.integers(0, 200))
def test_check_of_arbitrary_parts_raises_only_wire_errors(parts: list[bytes], max_size: int) -> None:
    try:
        wire.check(parts, max_size)
    except wire.WireError:
        pass


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_number_of_parts(count: int) -> None:
    parts = (_parts({}) * 2)[:count]
    with pytest.raises(wire.MalformedFrame, match=f"expected 2 message parts, got {count}"):
        wire.decode(parts, BIG)
    with pytest.raises(wire.MalformedFrame, match=f"got {count}"):
        wire.check(parts, BIG)


def test_empty_topic() -> None:
    with pytest.raises(wire.MalformedFrame, match="channel of 0 bytes"):
        wire.decode(_parts({}, topic=b""), BIG)


def test_topic_over_255_bytes() -> None:
    with pytest.raises(wire.MalformedFrame, match="channel of 256 bytes"):
        wire.decode(_parts({}, topic=b"x" * 256), BIG)


def test_non_utf8_topic() -> None:
    with pytest.raises(wire.MalformedFrame, match="channel is not UTF-8"):
        wire.decode(_parts({}, topic=b"room\xff"), BIG)


@pytest.mark.parametrize("length", [0, 3, wire.HEADER_SIZE - 1, wire.HEADER_SIZE])
def test_body_without_header_and_payload(length: int) -> None:
    body = _body(b"")[:length]
    with pytest.raises(wire.MalformedFrame, match=f"body of {length} bytes is shorter"):
        wire.decode([b"room", body], BIG)


def test_bad_magic() -> None:
    parts = [b"room", _body(b"\x80", magic=b"XYZ")]
    with pytest.raises(wire.MalformedFrame, match="bad magic") as info:
        wire.decode(parts, BIG)
    assert not isinstance(info.value, wire.UnsupportedVersion)


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_wrong_version(version: int) -> None:
    parts = [b"room", _body(b"\x80", version=version)]
    with pytest.raises(wire.UnsupportedVersion, match=f"frame version {version}, this code speaks 2"):
        wire.decode(parts, BIG)
    with pytest.raises(wire.UnsupportedVersion):
        wire.check(parts, BIG)


def test_a_version_1_frame_is_refused_for_its_version() -> None:
    # Version 1: the 30-byte header, without base (what a not yet upgraded process sends).
    old = struct.pack("!3sBBB16sQ", wire.MAGIC, 1, 0, 0, ORIGIN, 7) + msgpack.packb({"a": 1})
    for call in (wire.check, wire.decode):
        with pytest.raises(wire.UnsupportedVersion, match="frame version 1, this code speaks 2"):
            call([b"room", old], BIG)


@pytest.mark.parametrize(("seq", "base"), [(7, 8), (7, 0), (0, 1), (1, 2**64 - 1)])
def test_a_base_that_does_not_fit_its_seq_is_refused_at_both_ends(seq: int, base: int) -> None:
    parts = [b"room", _body(msgpack.packb({}), seq=seq, base=base)]
    for call in (wire.check, wire.decode):
        with pytest.raises(wire.MalformedFrame, match=f"base {base} does not fit seq {seq}"):
            call(parts, BIG)
    with pytest.raises(wire.WireError, match=f"base {base} does not fit seq {seq}"):
        wire.encode(wire.Frame("room", ORIGIN, seq, {}, base=base), BIG)


def test_a_numbered_frame_without_a_base_cannot_be_encoded() -> None:
    with pytest.raises(wire.WireError, match="base 0 does not fit seq 3"):
        wire.encode(wire.Frame("room", ORIGIN, 3, {}), BIG)
    with pytest.raises(wire.WireError, match="base must be an integer"):
        wire.encode(wire.Frame("room", ORIGIN, 3, {}, base=None), BIG)  # type: ignore[arg-type]


def test_rebase_changes_only_the_base() -> None:
    parts = wire.encode(wire.Frame("room", ORIGIN, 9, {"k": [1, b"x"]}, base=2), BIG)
    again = wire.rebase(parts, 9)
    assert wire.decode(again, BIG) == wire.Frame("room", ORIGIN, 9, {"k": [1, b"x"]}, base=9)
    assert again[1][:30] == parts[1][:30] and again[1][38:] == parts[1][38:]
    with pytest.raises(wire.WireError, match="base 10 does not fit seq 9"):
        wire.rebase(parts, 10)


def test_unsupported_version_is_a_malformed_frame() -> None:
    assert issubclass(wire.UnsupportedVersion, wire.MalformedFrame)
    assert issubclass(wire.MalformedFrame, wire.WireError)
    assert issubclass(wire.FrameTooLarge, wire.WireError)


def test_truncated_msgpack() -> None:
    packed = msgpack.packb({"data": "some text"})
    with pytest.raises(wire.MalformedFrame, match="payload is not valid msgpack"):
        wire.decode([b"room", _body(packed[:-1])], BIG)


def test_trailing_garbage_after_msgpack() -> None:
    packed = msgpack.packb({"data": 1}) + b"\x00"
    with pytest.raises(wire.MalformedFrame, match="not valid msgpack: .*extra data"):
        wire.decode([b"room", _body(packed)], BIG)


@pytest.mark.parametrize(
    ("payload", "type_name"), [([1, 2], "list"), (5, "int"), ("text", "str"), (None, "NoneType")]
)
def test_payload_that_is_not_a_map(payload: object, type_name: str) -> None:
    with pytest.raises(wire.MalformedFrame, match=f"payload must be a map, got {type_name}"):
        wire.decode(_parts(payload), BIG)


@pytest.mark.parametrize("payload", [{1: "x"}, {"ok": {2.5: "x"}}, {"ok": [{None: 1}]}])
def test_non_string_map_keys(payload: dict) -> None:
    with pytest.raises(wire.MalformedFrame, match="not valid msgpack"):
        wire.decode(_parts(payload), BIG)


def test_bytes_map_keys_are_refused() -> None:
    with pytest.raises(wire.MalformedFrame):
        wire.decode(_parts({b"key": 1}), BIG)


@pytest.mark.parametrize("code", [0, 5, 127])
def test_msgpack_ext_types_are_refused(code: int) -> None:
    parts = _parts({"x": msgpack.ExtType(code, b"data")})
    with pytest.raises(wire.MalformedFrame, match=f"extension type {code} is not allowed"):
        wire.decode(parts, BIG)


def test_msgpack_timestamp_ext_is_refused() -> None:
    with pytest.raises(wire.MalformedFrame):
        wire.decode(_parts({"t": msgpack.Timestamp(1, 0)}), BIG)


def test_deeply_nested_payload_is_refused() -> None:
    packed = b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0"
    with pytest.raises(wire.MalformedFrame, match="not valid msgpack"):
        wire.decode([b"room", _body(packed)], BIG)


def test_frame_over_max_size_at_decode_and_check() -> None:
    parts = _parts({"data": b"x" * 100})
    size = len(parts[0]) + len(parts[1])
    limit = size - 1
    message = f"frame of {size} bytes is over the limit of {limit} bytes"
    with pytest.raises(wire.FrameTooLarge, match=message):
        wire.check(parts, limit)
    with pytest.raises(wire.FrameTooLarge, match=message):
        wire.decode(parts, limit)


def test_oversize_is_reported_before_content_is_examined() -> None:
    # A garbage frame that is also too big is refused for its size.
    with pytest.raises(wire.FrameTooLarge):
        wire.check([b"", b"garbage" * 10], 20)


# --------------------------------------------------------------------------- encode errors


def test_frame_over_max_size_at_encode() -> None:
    frame = wire.Frame("room", ORIGIN, 1, {"data": b"x" * 500}, base=1)
    size = sum(len(part) for part in wire.encode(frame, BIG))
    with pytest.raises(wire.FrameTooLarge) as info:
        wire.encode(frame, size - 1)
    assert f"frame of {size} bytes" in str(info.value)
    assert f"limit of {size - 1} bytes" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [{1, 2}, object(), 2**64, -(2**63) - 1, "\ud800"],
    ids=["set", "object", "int-too-big", "int-too-small", "lone-surrogate"],
)
def test_unencodable_payload_value(bad: object) -> None:
    frame = wire.Frame("room", ORIGIN, 1, {"value": {"nested": [bad]}}, base=1)
    with pytest.raises(wire.WireError, match="payload cannot be encoded"):
        wire.encode(frame, BIG)


@pytest.mark.parametrize("origin", [b"", b"x" * 15, b"x" * 17])
def test_origin_not_16_bytes(origin: bytes) -> None:
    with pytest.raises(wire.WireError, match=f"origin must be 16 bytes, got {len(origin)}"):
        wire.encode(wire.Frame("room", origin, 1, {}, base=1), BIG)


@pytest.mark.parametrize("seq", [-1, 2**64])
def test_seq_out_of_range(seq: int) -> None:
    with pytest.raises(wire.WireError, match=f"seq out of range: {seq}"):
        wire.encode(wire.Frame("room", ORIGIN, seq, {}, base=seq), BIG)


@pytest.mark.parametrize(("payload", "type_name"), [([1], "list"), (None, "NoneType"), ("x", "str")])
def test_non_dict_payload(payload: Any, type_name: str) -> None:
    with pytest.raises(wire.WireError, match=f"payload must be a dict, got {type_name}"):
        wire.encode(wire.Frame("room", ORIGIN, 1, payload, base=1), BIG)


@pytest.mark.parametrize("channel", ["", b"room", None])
def test_empty_or_non_string_channel(channel: Any) -> None:
    with pytest.raises(wire.WireError, match="channel must be a non-empty string"):
        wire.encode(wire.Frame(channel, ORIGIN, 1, {}, base=1), BIG)


@pytest.mark.parametrize("channel", ["x" * 256, "é" * 128])
def test_channel_over_255_bytes_at_encode(channel: str) -> None:
    with pytest.raises(wire.WireError, match="channel name over 255 bytes"):
        wire.encode(wire.Frame(channel, ORIGIN, 1, {}, base=1), BIG)


@pytest.mark.parametrize(
    "payload", [{"m": {1: "x"}}, {"x": msgpack.ExtType(5, b"d")}], ids=["int-key", "ext-type"]
)
def test_encode_refuses_what_decode_refuses(payload: dict) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(wire.Frame("room", ORIGIN, 1, payload, base=1), BIG)


@pytest.mark.parametrize(("origin", "seq"), [("x" * 16, 1), (ORIGIN, 1.5)], ids=["str-origin", "float-seq"])
def test_encode_wrong_field_types_raise_wire_error(origin: Any, seq: Any) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(wire.Frame("room", origin, seq, {}, base=seq), BIG)


def test_a_batch_splits_into_frames_of_its_topic() -> None:
    frames = [wire.encode(wire.Frame("c", b"o" * 16, seq, {"n": seq}, base=seq), 1024) for seq in (1, 2, 3)]
    batch = [frames[0][0], *(f[1] for f in frames)]
    assert wire.split_batch(batch) == frames
    with pytest.raises(wire.MalformedFrame):
        wire.split_batch(batch[:1])
    with pytest.raises(wire.MalformedFrame):
        wire.split_batch([b"c"] + [frames[0][1]] * (wire.MAX_BATCH + 1))
