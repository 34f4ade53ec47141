"""The chat's announcer: a side process that posts announcements to every chat client.

Declared in example_confs/with_side_process.py; gunicorn's arbiter starts it
before the workers, restarts it when it dies, stops it on exit, and it dies
with the arbiter. Every ``--every`` seconds (the first at once) it sends the
next announcement, from the file CHAT_ANNOUNCEMENTS names (one a line) or a
built-in list:

- the socket.io event ``announcement`` to every client of every worker;
- the barrel event ``chat-announcement`` to every worker, which keeps the
  latest and greets the clients that connect later with it (``hello``).

    announcement {"text": str, "n": int (from 1 in each announcer process), "pid": its pid,
                  "t": unix time (s)}

Its log lines go to gunicorn's error log, prefixed "announcer: ".
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
from collections.abc import Sequence

from gunicorn_barrel import side

EVENT = "chat-announcement"
BUILT_IN = (
    "Welcome! Rooms are open to everyone who knows their name.",
    "Messages reach everyone in the room, whichever worker holds them.",
)
_FLUSH = 5.0

log = logging.getLogger("demos.chat.announcer")


def announcements(path: str | None) -> list[str]:
    """The lines of ``path`` (blank ones skipped), or the built-in ones."""
    if not path:
        return list(BUILT_IN)
    with open(path, encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip()]
    if not lines:
        raise SystemExit(f"announcer: {path} holds no announcement")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="demos.chat.announcer")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between announcements")
    args = parser.parse_args(argv)
    side.setup_logging()
    texts = announcements(os.environ.get("CHAT_ANNOUNCEMENTS"))
    stop = side.stop_signals()  # before the emitter's thread starts
    log.info("one announcement every %s s, %s in turn", args.every, len(texts))
    sent = 0
    with side.emitter() as em:
        for n, text in enumerate(itertools.cycle(texts), 1):
            message = {"text": text, "n": n, "pid": os.getpid(), "t": round(time.time(), 3)}
            em.emit("announcement", message)
            em.event(EVENT, message)
            sent = n
            if not em.flush(_FLUSH):
                log.warning("announcement %s not taken by the bus within %s s; kept and resent", n, _FLUSH)
            if stop.wait(args.every):
                break
    log.info("stopped after %s announcements", sent)


if __name__ == "__main__":
    main()
