"""A standalone barrel hub: a broadcaster with federation links and no gunicorn.

    gunicorn-barrel-hub --listen tcp://0.0.0.0:7000 --keys /etc/barrel/hub-keys
    python -m gunicorn_barrel.federation.hub --listen ... --keys ... [--peers NAME=tcp://HOST:PORT,...]

The centre of a star (each gunicorn instance dials the hub), or the place
where emitters outside gunicorn (cron jobs, other services) send their
socket.io events (``gunicorn_barrel.sio.emitter``). It forwards every frame it
has not seen to every other link, exactly like a broadcaster's federation.
It runs until SIGTERM or SIGINT. Its runtime directory (``barrel-<pid>-*``
under the temporary directory, ``TMPDIR``) holds its status file: which
links are up, what each keeps (``gunicorn_barrel.bus.zeromq.status``).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence

from gunicorn_barrel.bus.zeromq import broadcaster
from gunicorn_barrel.config import arguments
from gunicorn_barrel.runtime import endpoints

_SETTINGS = ("federation_listen", "federation_keys", "federation_peers", "federation_queue_limit",
             "max_frame_size")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gunicorn-barrel-hub", description=__doc__.splitlines()[0])
    # The broadcaster's settings, without their federation_ prefix; use the instances' max_frame_size.
    arguments.add_settings(parser, _SETTINGS, drop_prefix="federation_", required=("federation_keys",))
    args = parser.parse_args(argv)
    if not args.federation_listen and not args.federation_peers:
        parser.error("give --listen, --peers or both")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    config = broadcaster.federation_config(parser, args)
    # Its ipc sockets let a process on the hub's host use it like a worker would.
    runtime_dir = endpoints.create_runtime_dir(tempfile.gettempdir())
    hub = broadcaster.Broadcaster(runtime_dir, args.max_frame_size, None, config, settle=0.0)
    signal.signal(signal.SIGTERM, hub.stop)
    signal.signal(signal.SIGINT, hub.stop)
    try:
        hub.run()
    finally:
        endpoints.remove_runtime_dir(runtime_dir)


if __name__ == "__main__":
    main()
