"""A standalone barrel hub: a broadcaster with federation links and no gunicorn.

    gunicorn-barrel-hub --listen tcp://0.0.0.0:7000 --keys /etc/barrel/hub-keys
    python -m gunicorn_barrel.hub --listen ... --keys ... [--peers NAME=tcp://HOST:PORT,...]

The centre of a star (each gunicorn instance dials the hub), or the place
where emitters outside gunicorn (cron jobs, other services) send their
socket.io events (``gunicorn_barrel.emitter``). It forwards every frame it
has not seen to every other link, exactly like a broadcaster's federation.
It runs until SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence

from gunicorn_barrel.bus import broadcaster, endpoints


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gunicorn-barrel-hub", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="", help="tcp://HOST:PORT to accept peers and emitters on")
    parser.add_argument("--keys", required=True, help="key directory (see gunicorn-barrel-keys)")
    parser.add_argument("--peers", default="", help="NAME=tcp://HOST:PORT,... to dial (optional)")
    parser.add_argument("--queue-limit", type=int, default=100_000,
                        help="frames kept per link while a peer is away (default 100000)")
    parser.add_argument("--max-frame-size", type=int, default=1024 * 1024,
                        help="largest frame in bytes; use the instances' max_frame_size (default 1 MiB)")
    args = parser.parse_args(argv)
    if not args.listen and not args.peers:
        parser.error("give --listen, --peers or both")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    fed_args = argparse.Namespace(
        federation_listen=args.listen, federation_peers=args.peers,
        federation_keys=args.keys, federation_queue_limit=args.queue_limit,
    )
    config = broadcaster.federation_config(parser, fed_args)
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
