"""``gunicorn-barrel``: commands for operators (``python -m gunicorn_barrel`` too).

``gunicorn-barrel status [--json] [--pid-file PATH | --runtime-dir DIR | --bind HOST:PORT]``
asks a running instance for its workers and their clients, its side
processes, its federation links and its main counters. It reads the
instance's private runtime directory (0700), so only the instance's user
(and root) can ask. Without an option it looks for the one instance of this
user under the default runtime base (``BARREL_RUNTIME_DIR`` or the system's
temporary directory). Exit status: 0, 1 when no instance is found, 2 for a
usage error, 3 when access is denied.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gunicorn_barrel.metrics import locate, status

EXIT_NOT_FOUND = 1
EXIT_DENIED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gunicorn-barrel", description="Operate gunicorn_barrel instances.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("status", help="workers, clients, side processes, links and counters of "
                                              "a running instance")
    show.add_argument("--json", action="store_true", help="print the report as JSON")
    where = show.add_mutually_exclusive_group()
    where.add_argument("--pid-file", help="gunicorn's pid file (gunicorn --pid PATH)")
    where.add_argument("--runtime-dir", help="the instance's runtime directory (barrel-<pid>-...) or the "
                                             "runtime_dir base it was made under")
    where.add_argument("--bind", help="the address the instance listens on: HOST:PORT or unix:PATH")
    return parser


def _find(args: argparse.Namespace) -> str:
    if args.pid_file:
        return locate.from_pid_file(args.pid_file)
    if args.runtime_dir:
        return locate.from_runtime_dir(args.runtime_dir)
    if args.bind:
        return locate.from_bind(args.bind)
    return locate.from_runtime_dir(locate.default_base())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = status.gather(_find(args))
    except locate.AccessDenied as exc:
        print(f"gunicorn-barrel: {exc}", file=sys.stderr)
        return EXIT_DENIED
    except locate.NotFound as exc:
        print(f"gunicorn-barrel: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(json.dumps(report, indent=2) if args.json else status.render(report))
    return 0


def console() -> None:
    """The console script's entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    console()
