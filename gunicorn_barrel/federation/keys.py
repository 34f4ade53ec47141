"""Federation keys: make a CURVE key pair, and read a broadcaster's key directory.

A key directory (the ``federation_keys`` setting) holds::

    NAME.key_secret   this broadcaster's key pair (only one *.key_secret file)
    NAME.key          its public key: copy it into each peer's peers/ directory
    peers/OTHER.key   the public keys of the peers: who may connect here, and
                      (by OTHER, in federation_peers) whom we connect to. A
                      listener keeps frames from its start for every peer here
                      that it does not dial: each is expected to dial in.
    emitters/X.key    send-only emitters (cron jobs, services) allowed to connect;
                      nothing is kept for them

Make a key pair with ``gunicorn-barrel-keys DIR NAME`` (or
``python -m gunicorn_barrel.federation.keys DIR NAME``). The files are zeromq's
certificate format (``zmq.auth``): z85 text, never code.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import zmq
import zmq.auth

from gunicorn_barrel.config.settings import SettingsError
from gunicorn_barrel.config.values import parse_peers

PEERS_DIR = "peers"
EMITTERS_DIR = "emitters"


class KeyFileError(ValueError):
    """A key directory that cannot be used (missing, ambiguous or unreadable files)."""


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """This broadcaster's key pair and its peers' public keys (z85 bytes)."""

    public: bytes
    secret: bytes
    peers: dict[str, bytes]  # peer name -> public key
    emitters: dict[str, bytes] = dataclasses.field(default_factory=dict)  # send-only, name -> key

    @property
    def node(self) -> str:
        return self.public.decode("ascii")

    def is_authorized(self, public: bytes) -> bool:
        return public in self.peers.values() or public in self.emitters.values()


def generate(directory: str, name: str) -> tuple[str, str]:
    """Write NAME.key and NAME.key_secret into ``directory``; return their paths."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"bad key name {name!r}")
    os.makedirs(os.path.join(directory, PEERS_DIR), exist_ok=True)
    secret_path = os.path.join(directory, f"{name}.key_secret")
    if os.path.exists(secret_path):
        raise KeyFileError(f"{secret_path} exists; remove it first to make a new key pair")
    # The secret file is readable by its owner only.
    old_umask = os.umask(0o077)
    try:
        public_path, secret_path = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    os.chmod(public_path, 0o644)
    return public_path, secret_path


def load(directory: str) -> KeyRing:
    """Read the key directory; raise KeyFileError with the reason when it is unusable."""
    if not os.path.isdir(directory):
        raise KeyFileError(f"federation key directory {directory!r} does not exist")
    secrets = sorted(f for f in os.listdir(directory) if f.endswith(".key_secret"))
    if len(secrets) != 1:
        raise KeyFileError(
            f"{directory!r} must hold exactly one *.key_secret file (this broadcaster's key pair), "
            f"found {len(secrets)}; make one with: gunicorn-barrel-keys {directory} NAME"
        )
    secret_path = os.path.join(directory, secrets[0])
    _check_private(secret_path)
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read {secrets[0]}: {exc}") from None
    if secret is None:
        raise KeyFileError(f"{secrets[0]} has no secret key")
    return KeyRing(public, secret, _public_keys(directory, PEERS_DIR),
                   _public_keys(directory, EMITTERS_DIR))


def _public_keys(directory: str, subdir: str) -> dict[str, bytes]:
    """name -> public key for each NAME.key in ``directory/subdir`` (none if it does not exist)."""
    found: dict[str, bytes] = {}
    path = os.path.join(directory, subdir)
    if not os.path.isdir(path):
        return found
    for fname in sorted(os.listdir(path)):
        if not fname.endswith(".key"):
            continue
        try:
            public, _ = zmq.auth.load_certificate(os.path.join(path, fname))
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read {subdir}/{fname}: {exc}") from None
        found[fname[: -len(".key")]] = public
    return found


def _check_private(secret_path: str) -> None:
    """Refuse a secret key that other users may read or change (as ssh does)."""
    try:
        mode = os.stat(secret_path).st_mode & 0o777
    except OSError as exc:
        raise KeyFileError(f"cannot read {secret_path}: {exc}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"secret key {secret_path} is open to group or others (mode {mode:#o}); "
            f"make it private with: chmod 600 {secret_path}"
        )


def check_settings(directory: str, peers: str) -> None:
    """At config load, not in the broadcaster: a key missing for a peer stops gunicorn with its name."""
    if not directory:
        raise SettingsError("barrel setting federation_keys is required with federation_listen "
                            "or federation_peers (make keys with gunicorn-barrel-keys)")
    try:
        ring = load(directory)
    except KeyFileError as exc:
        raise SettingsError(f"invalid barrel setting federation_keys: {exc}") from None
    try:
        names = [name for name, _endpoint in parse_peers(peers)]
    except ValueError as exc:
        raise SettingsError(f"invalid barrel setting federation_peers: {exc}") from None
    for name in names:
        if name not in ring.peers:
            raise SettingsError(f"invalid barrel setting federation_peers: no public key for peer "
                                f"{name!r} ({directory}/peers/{name}.key)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gunicorn-barrel-keys",
        description="Make a CURVE key pair for a barrel federation link (broadcaster, hub or emitter).",
    )
    parser.add_argument("directory", help="key directory (the federation_keys setting)")
    parser.add_argument("name", help="this host's name: the public key is written to NAME.key")
    args = parser.parse_args(argv)
    try:
        public_path, secret_path = generate(args.directory, args.name)
    except KeyFileError as exc:
        print(f"gunicorn-barrel-keys: {exc}", file=sys.stderr)
        return 1
    print(f"secret key pair: {secret_path} (keep it here)")
    print(f"public key:      {public_path}")
    print(f"copy {public_path} into the {PEERS_DIR}/ directory of every peer's key directory "
          f"(an emitter's key: into the {EMITTERS_DIR}/ directory of the listener it sends to)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
