"""Coverage-guided fuzz target (atheris / libFuzzer) for wire.check and wire.decode.

    pip install atheris
    python tests/fuzz_wire_atheris.py -max_total_time=20

Not collected by pytest (tests/test_fuzz_wire.py is the bounded, coverage-free
fuzzer that runs in the suite). The input's first byte chooses how the rest is
used: as raw message parts, or as byte overwrites applied to one of the valid
frames of that module's corpus (so libFuzzer starts from well-formed frames
without a corpus directory). Properties, as in the pytest fuzzer:

- check() and decode() raise nothing but wire.WireError subclasses;
- what check() accepts, decode() returns or refuses for a payload reason only;
- a decoded Frame encodes again and decodes to the same frame.
"""
from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    from gunicorn_barrel.bus import wire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.test_fuzz_wire import (  # noqa: E402 - after the instrumented import
    BIG,
    CORPUS,
    LIMITS,
    PAYLOAD_REASONS,
    _packed,
)


def _parts_from(data: bytes) -> tuple[list[bytes], int]:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    limit = LIMITS[fdp.ConsumeIntInRange(0, len(LIMITS) - 1)]
    if mode == 0:  # raw parts
        count = fdp.ConsumeIntInRange(0, 4)
        parts = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) for _ in range(count)]
        return parts, limit
    # a valid frame with overwrites, truncation or an appended tail
    parts = list(CORPUS[fdp.ConsumeIntInRange(0, len(CORPUS) - 1)])
    which = fdp.ConsumeIntInRange(0, 1)
    target = bytearray(parts[which])
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if not target:
            break
        target[fdp.ConsumeIntInRange(0, len(target) - 1)] = fdp.ConsumeIntInRange(0, 255)
    if mode == 2:
        del target[fdp.ConsumeIntInRange(0, len(target)):]
    elif mode == 3:
        cut = fdp.ConsumeIntInRange(0, len(target))
        target[cut:] = fdp.ConsumeBytes(fdp.remaining_bytes())
    parts[which] = bytes(target)
    return parts, limit


def test_one_input(data: bytes) -> None:
    parts, limit = _parts_from(data)
    refused_by_check: wire.WireError | None = None
    try:
        wire.check(parts, limit)
    except wire.WireError as exc:
        refused_by_check = exc
    if refused_by_check is not None:
        try:
            wire.decode(parts, limit)
        except type(refused_by_check):
            return
        raise AssertionError(f"check() refused ({refused_by_check!r}) what decode() did not refuse alike")
    try:
        frame = wire.decode(parts, limit)
    except wire.WireError as exc:
        if type(exc) is wire.MalformedFrame and str(exc).startswith(PAYLOAD_REASONS):
            return
        raise AssertionError(f"check() accepted what decode() refuses for a framing reason: {exc!r}") from exc
    again = wire.decode(wire.encode(frame, BIG), BIG)
    assert (again.channel, again.origin, again.seq, again.base) == (frame.channel, frame.origin, frame.seq,
                                                                    frame.base)
    assert _packed(again.payload) == _packed(frame.payload)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
