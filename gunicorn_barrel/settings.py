"""gunicorn_barrel's own settings: declared once, validated, documented from here.

gunicorn silently drops names it does not know from a config file, so barrel
settings travel another way: keyword arguments of ``hooks.install()`` in the
config file, overridden by ``BARREL_*`` environment variables. Every value is
validated when it is set; a bad or unknown name stops gunicorn with a message
that says which setting and why.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "BARREL_"


class SettingsError(ValueError):
    """A barrel setting is unknown or has an invalid value."""


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on/off, true/false, yes/no or 1/0, got {raw!r}")


def _number_between(kind: type[int] | type[float], low: float, high: float) -> Callable[[object], Any]:
    expected = "an integer" if kind is int else "a number"

    def parse(raw: object) -> int | float:
        if isinstance(raw, bool):
            raise ValueError(f"expected {expected}, got {raw!r}")
        try:
            value = kind(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected {expected}, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[object], int]:
    return _number_between(int, low, high)


def _float_between(low: float, high: float) -> Callable[[object], float]:
    return _number_between(float, low, high)


def _choice(*allowed: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _store_backend(raw: object) -> str:
    value = str(raw).strip()
    if value in ("embedded", "none") or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise ValueError(f"expected 'embedded', 'none' or a redis:// URL, got {raw!r}")


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_url(value: str) -> str:
    """``value`` if it is a usable Redis URL (checked without connecting), else ValueError."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"unparsable Redis URL {_safe(value)!r}: {exc}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {_safe(value)!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"a unix:// Redis URL needs a socket path, got {_safe(value)!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"a Redis URL needs a host (redis://host:port/db), got {_safe(value)!r}")
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"the database in a Redis URL is a number (redis://h:6379/0), got {_safe(value)!r}")
    return value


def _bus_backend(raw: object) -> str:
    value = str(raw).strip()
    if value == "zmq":
        return value
    if "://" not in value:
        raise ValueError(f"expected 'zmq' or a redis://, rediss:// or unix:// URL, got {value!r}")
    return _redis_url(value)


def _namespace(raw: object) -> str:
    value = str(raw).strip()
    if len(value) > 64 or not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"expected up to 64 letters, digits, '-', '_' or '.', got {raw!r}")
    return value


def _absolute_path(raw: object) -> str:
    path = str(raw)
    if not path:
        raise ValueError("must not be empty")
    return os.path.abspath(path)


def _existing_dir(raw: object) -> str:
    path = str(raw)
    if not os.path.isabs(path):
        raise ValueError(f"must be an absolute path, got {path!r}")
    if not os.path.isdir(path):
        raise ValueError(f"directory {path!r} does not exist")
    # ipc:// paths are limited to 107 bytes by sockaddr_un; leave room for
    # the private directory and socket names under it.
    if len(path.encode()) > 60:
        raise ValueError(f"path too long for unix sockets (max 60 bytes): {path!r}")
    return path


def _tcp_endpoint_or_off(raw: object) -> str:
    value = str(raw).strip()
    if value and not _is_tcp(value):
        raise ValueError(f"expected tcp://HOST:PORT or an empty string (off), got {raw!r}")
    return value


def _peer_list(raw: object) -> str:
    value = str(raw).strip()
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, endpoint = item.partition("=")
        if not sep or not name.strip() or not _is_tcp(endpoint.strip()):
            raise ValueError(f"expected NAME=tcp://HOST:PORT[,...], got {item!r}")
    return value


def _is_tcp(endpoint: str) -> bool:
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    return endpoint.startswith("tcp://") and bool(sep and host) and port.isdigit()


def _dir_or_off(raw: object) -> str:
    path = str(raw).strip()
    if path and not os.path.isdir(path):
        raise ValueError(f"directory {path!r} does not exist (make keys with gunicorn-barrel-keys)")
    return os.path.abspath(path) if path else ""


def _default_runtime_base() -> str:
    return tempfile.gettempdir()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting: its name, parser, default and documentation."""

    name: str
    parse: Callable[[object], Any]
    default: Callable[[], Any]
    doc: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "runtime_dir",
        _existing_dir,
        _default_runtime_base,
        "Directory under which each gunicorn instance creates its private "
        "runtime directory (mode 0700, removed on exit) holding the bus's "
        "ipc sockets. Default: the system temporary directory.",
    ),
    Setting(
        "max_frame_size",
        _int_between(1024, 256 * 1024 * 1024),
        lambda: 1024 * 1024,
        "Largest bus frame in bytes (one emit with its data, encoded). A "
        "larger emit raises FrameTooLarge in the caller; a larger frame "
        "received from the ipc socket is refused and counted. Default 1 MiB.",
    ),
    Setting(
        "websocket_deflate",
        _parse_bool,
        lambda: False,
        "Accept permessage-deflate when a WebSocket client offers it. Off by "
        "default: on small messages it costs about 5x throughput. Negotiated "
        "without context takeover, so no zlib state is kept per connection.",
    ),
    Setting(
        "websocket_deflate_min_size",
        _int_between(0, 256 * 1024 * 1024),
        lambda: 1024,
        "With deflate negotiated, messages smaller than this many bytes are "
        "sent uncompressed (compressing them costs more CPU than it saves "
        "bytes). Default 1024.",
    ),
    Setting(
        "gap_timeout",
        _float_between(0.1, 60.0),
        lambda: 5.0,
        "Seconds a worker holds back a sender's later frames while an earlier one "
        "is missing (it is being resent after a broadcaster restart, or replayed on "
        "request on a Redis bus). After that the gap is counted, logged and skipped. Default 5.",
    ),
    Setting(
        "max_unacked",
        _int_between(100, 10_000_000),
        lambda: 100_000,
        "Frames a worker keeps for resending until the broadcaster acknowledges them; "
        "past it the oldest is dropped and counted (frames_unrecoverable). Default 100000.",
    ),
    Setting(
        "client_queue_limit",
        _int_between(10, 1_000_000),
        lambda: 1000,
        "Packets queued for one client that does not read (or does not poll). At the "
        "limit, slow_client_policy applies. Default 1000.",
    ),
    Setting(
        "slow_client_policy",
        _choice("disconnect", "drop_oldest"),
        lambda: "disconnect",
        "What happens to a client at client_queue_limit: 'disconnect' closes its "
        "session and its connection (it reconnects and resynchronises, counted in "
        "clients_dropped_slow); 'drop_oldest' drops its oldest queued packet for each "
        "new one (counted in packets_dropped_slow). Default disconnect.",
    ),
    Setting(
        "store",
        _store_backend,
        lambda: "embedded",
        "The shared key/value store (gunicorn_barrel.store): 'embedded' (a side "
        "process keeping it in SQLite, no server needed), a 'redis://host:port/db' URL, "
        "or 'none'. Default embedded.",
    ),
    Setting(
        "store_path",
        _absolute_path,
        lambda: "barrel-store.sqlite3",
        "The embedded store's SQLite file (relative paths are taken from gunicorn's "
        "working directory). It outlives gunicorn: stopping or restarting loses no "
        "acknowledged write. Default barrel-store.sqlite3.",
    ),
    Setting(
        "store_durability",
        _choice("process", "power"),
        lambda: "process",
        "'process': an acknowledged write survives any crash of the store process "
        "or of gunicorn (SQLite WAL, synchronous=NORMAL); 'power': it also survives "
        "power loss (synchronous=FULL, an fsync per write batch, slower). Default process.",
    ),
    Setting(
        "store_timeout",
        _float_between(0.05, 300.0),
        lambda: 5.0,
        "Seconds a store call waits for its answer before raising StoreTimeout. Default 5.",
    ),
    Setting(
        "store_max_value",
        _int_between(16, 64 * 1024 * 1024),
        lambda: 64 * 1024,
        "Largest store value in bytes (its JSON text); larger values raise "
        "StoreValueError at the call. Default 65536.",
    ),
    Setting(
        "restart_delay",
        _float_between(0.0, 10.0),
        lambda: 0.1,
        "Seconds the supervisor waits before restarting a broadcaster that "
        "died (doubled while it keeps dying within 2 s of its start, up to 2 s).",
    ),
    Setting(
        "bus",
        _bus_backend,
        lambda: "zmq",
        "The bus between workers: 'zmq' (a broadcaster side process per gunicorn "
        "instance, nothing to run) or a 'redis://host:port/db', 'rediss://...' or "
        "'unix:///path' URL: every worker of every instance using the URL shares one "
        "bus through Redis pub/sub (several hosts; see \"Redis bus\"). With a Redis bus "
        "the store defaults to the same URL, and store = 'embedded' is refused. Default zmq.",
    ),
    Setting(
        "bus_namespace",
        _namespace,
        lambda: "",
        "With a Redis bus: a name that separates the buses of several apps sharing one "
        "Redis (channels barrel:bus:<namespace>:...). Instances of one app must use the "
        "same. Default empty.",
    ),
    Setting(
        "federation_listen",
        _tcp_endpoint_or_off,
        lambda: "",
        "tcp://HOST:PORT on which the broadcaster accepts federation links from peer "
        "broadcasters, hubs and emitters (CURVE-authenticated). Empty (default): off.",
    ),
    Setting(
        "federation_peers",
        _peer_list,
        lambda: "",
        "Peers this broadcaster dials, as NAME=tcp://HOST:PORT,... where NAME is the "
        "peer's public key file peers/NAME.key in federation_keys. Configure each link "
        "on one side only. Empty (default): none.",
    ),
    Setting(
        "federation_keys",
        _dir_or_off,
        lambda: "",
        "Key directory for federation links: this broadcaster's NAME.key_secret and the "
        "peers' public keys in peers/ (made by gunicorn-barrel-keys). Required with "
        "federation_listen or federation_peers.",
    ),
    Setting(
        "federation_queue_limit",
        _int_between(100, 10_000_000),
        lambda: 100_000,
        "Frames a broadcaster keeps per federation link until the peer acknowledges them "
        "(resent when the link heals); past it the oldest is dropped and counted "
        "(federation_frames_dropped). Default 100000.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclasses.dataclass(frozen=True)
class BarrelSettings:
    """Validated values of every barrel setting."""

    runtime_dir: str
    max_frame_size: int
    websocket_deflate: bool
    websocket_deflate_min_size: int
    gap_timeout: float
    max_unacked: int
    client_queue_limit: int
    slow_client_policy: str
    store: str
    store_path: str
    store_durability: str
    store_timeout: float
    store_max_value: int
    restart_delay: float
    bus: str
    bus_namespace: str
    federation_listen: str
    federation_peers: str
    federation_keys: str
    federation_queue_limit: int


def _unknown(name: str, where: str) -> SettingsError:
    known = ", ".join(sorted(_BY_NAME))
    return SettingsError(f"unknown barrel setting {name!r} ({where}); known settings: {known}")


def _parse_one(setting: Setting, raw: object, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"invalid barrel setting {setting.name} ({where}): {exc}") from None


def resolve(
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BarrelSettings:
    """Validate settings: defaults < ``overrides`` (config file) < ``BARREL_*`` env."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for name in overrides:
        if name not in _BY_NAME:
            raise _unknown(name, "config file")
    known_env = {setting.env for setting in SETTINGS}
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in known_env:
            raise _unknown(key[len(ENV_PREFIX):].lower(), f"environment variable {key}")
    for setting in SETTINGS:
        # Validate the config file's value even when the environment wins,
        # so a typo there does not wait for the day the variable is unset.
        if setting.name in overrides:
            values[setting.name] = _parse_one(setting, overrides[setting.name], "config file")
        if setting.env in environ:
            values[setting.name] = _parse_one(setting, environ[setting.env], setting.env)
        elif setting.name not in values:
            values[setting.name] = _parse_one(setting, setting.default(), "default")
    store_given = "store" in overrides or "BARREL_STORE" in environ
    if values["federation_listen"] or values["federation_peers"]:
        _check_federation_keys(values["federation_keys"], values["federation_peers"])
    return BarrelSettings(**_combine(values, store_given))


def _combine(values: dict[str, Any], store_given: bool) -> dict[str, Any]:
    """Settings that depend on each other: the store follows a Redis bus."""
    if values["bus"] == "zmq":
        return values
    if values["federation_listen"] or values["federation_peers"]:
        raise SettingsError(
            "invalid barrel settings: federation_listen/federation_peers link broadcasters, "
            f"and bus={_safe(values['bus'])!r} runs none; instances sharing a Redis bus "
            "need no federation")
    # The embedded store is one per instance and publishes its changes through
    # the zmq broadcaster, which a Redis bus does not start: with instances on
    # several hosts the store must be shared too, so it follows the bus.
    if not store_given:
        return {**values, "store": values["bus"]}
    if values["store"] == "embedded":
        raise SettingsError(
            "invalid barrel settings store='embedded' with bus="
            f"{_safe(values['bus'])!r}: the embedded store needs the zmq bus; with a Redis "
            "bus set store to a redis:// URL (the default: the bus's URL) or 'none'")
    return values


def _safe(url: str) -> str:
    """``url`` with its password masked, for error messages."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "<unparsable URL>"
    return url.replace(f":{password}@", ":***@") if password else url


def _check_federation_keys(directory: str, peers: str) -> None:
    """At config load, not in the broadcaster: a key missing for a peer stops gunicorn with its name."""
    if not directory:
        raise SettingsError("barrel setting federation_keys is required with federation_listen "
                            "or federation_peers (make keys with gunicorn-barrel-keys)")
    from gunicorn_barrel.bus import keys  # imports zmq: only when federation is on

    try:
        ring = keys.load(directory)
    except keys.KeyFileError as exc:
        raise SettingsError(f"invalid barrel setting federation_keys: {exc}") from None
    for item in filter(None, (part.strip() for part in peers.split(","))):
        name = item.partition("=")[0].strip()
        if name not in ring.peers:
            raise SettingsError(f"invalid barrel setting federation_peers: no public key for peer "
                                f"{name!r} ({directory}/peers/{name}.key)")


def reference_table() -> str:
    """The settings reference as a reStructuredText list (kept in README.rst)."""
    lines = []
    for setting in SETTINGS:
        lines.append(f"``{setting.name}`` / ``{setting.env}``")
        lines.append(f"    {setting.doc}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(reference_table())
