"""A bounded-time mutation fuzzer for the bus wire format (wire.check / wire.decode).

Coverage-free: it starts from valid encoded frames and mutates them (bit
flips, byte inserts and deletes, truncation, splices, part counts, header
versions, huge msgpack lengths, deep nesting) for about FUZZ_SECONDS seconds
or FUZZ_ITERATIONS inputs, whichever comes first. The seed is fixed (and
printed); set WIRE_FUZZ_SEED / WIRE_FUZZ_SECONDS to explore further.
A failure names the seed, the iteration and the input, so it replays.

Properties:
- decode() and check() only ever raise wire.WireError subclasses, in bounded time;
- what check() lets through, decode() either returns as a Frame or refuses
  for a reason about the payload (never for a framing reason);
- a Frame decode() returns encodes again and decodes to the same frame.

Strict: any framing refusal of decode() that check() did not make fails the
test; check() is the header and framing validation, it must catch them all.

The coverage-guided variant is tests/fuzz_wire_atheris.py (atheris).
"""
from __future__ import annotations

import functools
import os
import random
import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import msgpack
import pytest

from gunicorn_barrel.bus import wire

SEED = int(os.environ.get("WIRE_FUZZ_SEED", "20240611"))
FUZZ_SECONDS = float(os.environ.get("WIRE_FUZZ_SECONDS", "10"))
FUZZ_ITERATIONS = int(os.environ.get("WIRE_FUZZ_ITERATIONS", "1000000"))
CALL_BUDGET = 2.0  # seconds one check() or decode() may take before it counts as a hang
BIG = 1 << 30
LIMITS = (BIG, 64 * 1024, 4096, 256, 40)

# The reasons decode() gives for a payload it refuses (the header and topic being fine).
PAYLOAD_REASONS = (
    "payload is not valid msgpack",
    "payload must be a map",
    "payload nested deeper than",
    "map keys must be strings",
    "values of type",
    "msgpack extension type",
)
ORIGINS = (bytes(16), b"\xff" * 16, bytes(range(16)))


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for n in range(depth):
        value = {"k": value} if n % 2 else [value]
    return value


PAYLOADS: list[dict[str, Any]] = [
    {},
    {"a": 1},
    {"method": "emit", "event": "news", "data": {"token": "abc"}, "namespace": "/",
     "room": None, "skip_sid": None, "callback": None, "host_id": "0123456789abcdef"},
    {"bytes": b"\x00\x01\xff" * 20, "text": "héllo ✓ 🎉", "empty": "", "eb": b""},
    {"ints": [0, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**32, 2**63 - 1, -(2**63), 2**64 - 1]},
    {"floats": [0.0, -0.0, 1.5, 1e308, -1e-308, float("inf")], "bools": [True, False], "none": None},
    {"deep": _nested(60)},
    {"wide": {f"k{n}": n for n in range(40)}},
    {"big": b"x" * 3000},
    {"list": list(range(300))},
]
CHANNELS = ("sio:socketio", "c", "room/é", "x" * 255, "sio:/chat")


def _corpus() -> list[list[bytes]]:
    frames = []
    for n, payload in enumerate(PAYLOADS):
        seq = n * 977
        frame = wire.Frame(CHANNELS[n % len(CHANNELS)], ORIGINS[n % len(ORIGINS)], seq, payload,
                           base=seq - n if seq else 0)
        frames.append(wire.encode(frame, BIG))
    return frames


CORPUS = _corpus()

INTERESTING_BYTES = bytes([0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC7, 0xD4,
                           0xD6, 0xD8, 0xD9, 0xDC, 0xDD, 0xDE, 0xDF, 0x90, 0x80, 0xA0, 0xCF, 0xD3])
# msgpack heads announcing far more than any input holds.
HUGE_HEADS = (
    b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
    b"\xc9\xff\xff\xff\xff\x05", b"\xdc\xff\xff", b"\xde\xff\xff", b"\xda\xff\xff", b"\xc5\xff\xff",
    b"\xc8\xff\xff\x01", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xd6\xff\x00\x00\x00\x01", b"\xd7\xff" + b"\xff" * 8, b"\xc7\x0c\xff" + b"\xff" * 12,
    b"\xd4\x01\x00", b"\xd5\x7f\x00\x00",
)


# --------------------------------------------------------------------------- mutations

Parts = list[bytes]


def _flip_bits(rnd: random.Random, parts: Parts) -> Parts:
    i = _pick_part(rnd, parts)
    data = bytearray(parts[i])
    for _ in range(rnd.randint(1, 4)):
        if data:
            pos = rnd.randrange(len(data))
            data[pos] ^= 1 << rnd.randrange(8)
    parts[i] = bytes(data)
    return parts


def _set_bytes(rnd: random.Random, parts: Parts) -> Parts:
    i = _pick_part(rnd, parts)
    data = bytearray(parts[i])
    for _ in range(rnd.randint(1, 3)):
        if data:
            data[rnd.randrange(len(data))] = rnd.choice(INTERESTING_BYTES)
    parts[i] = bytes(data)
    return parts


def _insert_bytes(rnd: random.Random, parts: Parts) -> Parts:
    i = _pick_part(rnd, parts)
    data = parts[i]
    pos = rnd.randint(0, len(data))
    blob = rnd.choice([bytes([rnd.randrange(256)]), rnd.randbytes(rnd.randint(1, 16)), rnd.choice(HUGE_HEADS),
                       bytes([rnd.choice(INTERESTING_BYTES)]) * rnd.randint(1, 64)])
    parts[i] = data[:pos] + blob + data[pos:]
    return parts


def _delete_bytes(rnd: random.Random, parts: Parts) -> Parts:
    i = _pick_part(rnd, parts)
    data = parts[i]
    if data:
        start = rnd.randrange(len(data))
        parts[i] = data[:start] + data[start + rnd.randint(1, 16):]
    return parts


def _truncate(rnd: random.Random, parts: Parts) -> Parts:
    i = _pick_part(rnd, parts)
    parts[i] = parts[i][: rnd.randint(0, len(parts[i]))]
    return parts


def _splice(rnd: random.Random, parts: Parts) -> Parts:
    other = list(rnd.choice(CORPUS))
    i = _pick_part(rnd, parts)
    j = min(i, len(other) - 1)
    cut_a = rnd.randint(0, len(parts[i]))
    cut_b = rnd.randint(0, len(other[j]))
    parts[i] = parts[i][:cut_a] + other[j][cut_b:]
    if rnd.random() < 0.3:  # a topic from one frame, a body from another
        parts[0] = other[0]
    return parts


def _part_count(rnd: random.Random, parts: Parts) -> Parts:
    choice = rnd.randrange(5)
    if choice == 0:
        return parts[:1]
    if choice == 1:
        return []
    if choice == 2:
        return [*parts, rnd.choice([b"", b"extra", parts[-1] if parts else b""])]
    if choice == 3:
        return [b"".join(parts)]
    return [parts[0]] * 3 if parts else [b""]


def _header_field(rnd: random.Random, parts: Parts) -> Parts:
    if len(parts) < 2 or len(parts[1]) < wire.HEADER_SIZE:
        return parts
    body = bytearray(parts[1])
    field = rnd.randrange(6)
    if field == 0:
        body[3] = rnd.choice([0, 2, 9, 255, rnd.randrange(256)])  # version
    elif field == 1:
        body[4] = rnd.randrange(256)  # flags
        body[5] = rnd.randrange(256)  # reserved
    elif field == 2:
        body[0:3] = rnd.choice([b"BRM", b"brl", b"\0\0\0", rnd.randbytes(3)])  # magic
    elif field == 3:
        body[22:30] = struct.pack("!Q", rnd.choice([0, 2**64 - 1, 2**63, rnd.randrange(2**64)]))  # seq
    elif field == 4:
        seq = int.from_bytes(body[22:30], "big")
        bases = [0, 1, seq, min(seq + 1, 2**64 - 1), max(seq - 1, 0), 2**64 - 1, rnd.randrange(2**64)]
        body[30:38] = struct.pack("!Q", rnd.choice(bases))  # base
    else:
        body[6:22] = rnd.randbytes(16)  # origin
    parts[1] = bytes(body)
    return parts


def _payload(rnd: random.Random, parts: Parts) -> Parts:
    """Replace or prefix the msgpack payload with a huge length, deep nesting or a wrong type."""
    if len(parts) < 2 or len(parts[1]) < wire.HEADER_SIZE:
        return parts
    header, packed = parts[1][: wire.HEADER_SIZE], parts[1][wire.HEADER_SIZE:]
    choice = rnd.randrange(8)
    if choice == 0:
        packed = rnd.choice(HUGE_HEADS) + packed[rnd.randint(0, len(packed)):]
    elif choice == 1:
        pos = rnd.randint(0, len(packed))
        packed = packed[:pos] + rnd.choice(HUGE_HEADS) + packed[pos:]
    elif choice == 2:
        depth = rnd.choice([99, 100, 101, 1000, 100_000])
        packed = b"\x81\xa1k" + b"\x91" * depth + b"\xc0"
    elif choice == 3:
        packed = b"\x81\xa1k" + b"\x81\xa1k" * rnd.choice([99, 100, 5000]) + b"\x01"
    elif choice == 4:  # a map with a non-string key
        packed = rnd.choice([b"\x81\x01\x01", b"\x81\xc4\x01k\x01", b"\x81\x91\x01\x01", b"\x81\xc0\x01",
                             b"\x81\xcb" + struct.pack("!d", 1.5) + b"\x01", b"\x81\x80\x01"])
    elif choice == 5:  # not a map, or trailing bytes
        packed = rnd.choice([b"\x90", b"\xc0", b"\xa1x", b"\x01", packed + b"\x01", packed + packed])
    elif choice == 6:  # invalid UTF-8 inside a string
        packed = b"\x81\xa1k\xa2\xff\xfe"
    else:  # an ext type
        packed = b"\x81\xa1k" + rnd.choice([b"\xd4\x05\x00", b"\xc7\x00\x01", b"\xd6\xff\x00\x00\x00\x01"])
    parts[1] = header + packed
    return parts


def _topic(rnd: random.Random, parts: Parts) -> Parts:
    if not parts:
        return parts
    parts[0] = rnd.choice([b"", b"\x00hb", b"\x00", b"\xff\xfe", b"sio:socketio\xc3", b"x" * 256,
                           b"x" * 255, "é".encode() * 127 + b"\xc3", rnd.randbytes(rnd.randint(1, 8))])
    return parts


MUTATORS: tuple[Callable[[random.Random, Parts], Parts], ...] = (
    _flip_bits, _set_bytes, _insert_bytes, _delete_bytes, _truncate, _splice, _part_count,
    _header_field, _payload, _topic,
)


def _pick_part(rnd: random.Random, parts: Parts) -> int:
    if not parts:
        parts.append(b"")
    # The body is where the structure is: mutate it more often.
    return len(parts) - 1 if len(parts) >= 2 and rnd.random() < 0.75 else rnd.randrange(len(parts))


def _mutant(rnd: random.Random) -> Parts:
    parts = list(rnd.choice(CORPUS))
    for _ in range(rnd.choice([1, 1, 1, 2, 2, 3, 5])):
        parts = rnd.choice(MUTATORS)(rnd, parts)
    return parts


# --------------------------------------------------------------------------- the harness


class _Hang(BaseException):
    """Raised by SIGALRM inside a call that took over CALL_BUDGET seconds."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _Hang


@contextmanager
def _alarm_guard() -> Iterator[None]:
    """Own SIGALRM for a while; then give back the handler and what was left of the timer.

    pytest-timeout (signal method) arms the same ITIMER_REAL for the whole test.
    """
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:
            remaining = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


def _bounded(call: Callable[[], Any], what: str) -> Any:
    """Run ``call`` with a watchdog; a hang becomes an assertion (a call in C ends at its next bytecode)."""
    signal.setitimer(signal.ITIMER_REAL, CALL_BUDGET)
    started = time.monotonic()
    try:
        result = call()
    except _Hang:
        raise AssertionError(f"{what} did not return within {CALL_BUDGET} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.monotonic() - started
    assert elapsed < CALL_BUDGET, f"{what} took {elapsed:.1f} s"
    return result


def _outcome(call: Callable[[], Any], what: str) -> Any:
    """The call's result, or the WireError it raised; any other exception fails the test."""
    try:
        return _bounded(call, what)
    except wire.WireError as exc:
        return exc
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the property under test
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc!r}") from exc


def _describe(parts: Parts, limit: int, iteration: int) -> str:
    shown = [p[:200].hex() + ("..." if len(p) > 200 else "") for p in parts]
    return (f"seed {SEED}, iteration {iteration}, max_size {limit}, "
            f"part sizes {[len(p) for p in parts]}, parts {shown}")


def _packed(payload: Any) -> bytes:
    return bytes(msgpack.packb(payload, use_bin_type=True))


def _fuzz_one(parts: Parts, limit: int, where: Callable[[], str], stats: dict[str, int]) -> None:
    checked = _outcome(lambda: wire.check(parts, limit), "check()")
    decoded = _outcome(lambda: wire.decode(parts, limit), "decode()")
    assert isinstance(checked, (wire.WireError, type(None))), where()
    if isinstance(checked, wire.WireError):
        # decode() starts with check(): it must refuse, and for the same reason class.
        assert isinstance(decoded, type(checked)), f"check: {checked!r}, decode: {decoded!r}; {where()}"
        stats["refused_by_check"] += 1
        return
    origin, seq, base = _bounded(lambda: wire.origin_seq_base(parts[1]), "origin_seq_base()")
    assert len(origin) == 16 and 0 <= seq < 2**64
    assert 1 <= base <= seq or base == seq == 0, (seq, base)
    if isinstance(decoded, wire.WireError):
        reason = str(decoded)
        assert type(decoded) is wire.MalformedFrame and reason.startswith(PAYLOAD_REASONS), (
            f"check() accepted a frame decode() refuses for a framing reason: {decoded!r}; {where()}"
        )
        stats["refused_payload"] += 1
        return
    frame = decoded
    assert isinstance(frame, wire.Frame), where()
    assert isinstance(frame.channel, str) and frame.channel.encode() == bytes(parts[0]), where()
    assert (frame.origin, frame.seq, frame.base) == (origin, seq, base), where()
    assert isinstance(frame.payload, dict), where()
    # What a receiver accepts, a sender can send again (the same rule at both ends).
    again = _outcome(lambda: wire.decode(wire.encode(frame, BIG), BIG), "encode()+decode() of a decoded one")
    assert isinstance(again, wire.Frame), f"{again!r}; {where()}"
    assert (again.channel, again.origin, again.seq, again.base) == (frame.channel, frame.origin, frame.seq,
                                                                    frame.base)
    assert _packed(again.payload) == _packed(frame.payload), where()
    stats["accepted"] += 1


def test_corpus_frames_are_valid() -> None:
    for parts in CORPUS:
        wire.check(parts, BIG)
        assert isinstance(wire.decode(parts, BIG), wire.Frame)


def test_mutation_fuzz_decode_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nwire fuzz: seed {SEED} (WIRE_FUZZ_SEED), {FUZZ_SECONDS} s / {FUZZ_ITERATIONS} inputs")
    rnd = random.Random(SEED)
    stats: dict[str, int] = {"refused_by_check": 0, "refused_payload": 0, "accepted": 0}
    deadline = time.monotonic() + FUZZ_SECONDS
    iteration = 0
    with _alarm_guard():
        while iteration < FUZZ_ITERATIONS and time.monotonic() < deadline:
            parts = _mutant(rnd)
            limit = rnd.choice(LIMITS)
            _fuzz_one(parts, limit, functools.partial(_describe, parts, limit, iteration), stats)
            iteration += 1
    with capsys.disabled():
        print(f"wire fuzz: {iteration} inputs, {stats}")
    # The fuzzer reached every outcome, or it tests less than it claims.
    assert iteration >= 1000
    assert all(stats[k] > 0 for k in ("refused_by_check", "refused_payload", "accepted")), stats


@pytest.mark.parametrize("limit", [BIG, 64])
@pytest.mark.parametrize("head", HUGE_HEADS)
def test_huge_msgpack_lengths_are_refused_quickly(head: bytes, limit: int) -> None:
    parts = [b"c", wire._HEADER.pack(wire.MAGIC, wire.VERSION, 0, 0, bytes(16), 1, 1) + head]
    with _alarm_guard():
        result = _outcome(lambda: wire.decode(parts, limit), "decode()")
    assert isinstance(result, wire.WireError)


def test_check_refuses_a_topic_that_decode_refuses() -> None:
    parts = wire.encode(wire.Frame("sio:socketio", bytes(16), 1, {"a": 1}, base=1), BIG)
    parts[0] = b"sio:socketio\xff"
    with pytest.raises(wire.WireError):
        wire.decode(parts, BIG)  # decode refuses it...
    with pytest.raises(wire.WireError):
        wire.check(parts, BIG)  # ...so check must too
