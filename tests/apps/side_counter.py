"""A side process for the tests: emits a numbered stream to every client.

    python -m tests.apps.side_counter [--every SECONDS] [--ready]

Each message is the event "seq" {"tag": "side-<its pid>", "n": 1, 2, 3, ...}
(what tests/js/sio_client.mjs counts per tag, with order and duplicates),
emitted every ``--every`` seconds (0.01 by default) for as long as it runs;
every 20th is also printed ("side counter <pid> emitted <n>"). ``--ready`` marks it ready (for
ready_timeout) once its emitter exists. It prints one line on stdout and one
on stderr at start.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

from gunicorn_barrel import side


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=float, default=0.01)
    parser.add_argument("--ready", action="store_true")
    args = parser.parse_args()
    print(f"side counter {os.getpid()} on stdout", flush=True)
    print(f"side counter {os.getpid()} on stderr", file=sys.stderr, flush=True)
    stop = threading.Event()
    with side.emitter() as em:
        if args.ready:
            side.ready()
        n = 0
        while not stop.wait(args.every):
            n += 1
            em.emit("seq", {"tag": f"side-{os.getpid()}", "n": n})
            if n % 20 == 0:
                print(f"side counter {os.getpid()} emitted {n}", flush=True)


if __name__ == "__main__":
    main()
