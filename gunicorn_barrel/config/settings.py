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

from gunicorn_barrel.config import values as v

ENV_PREFIX = "BARREL_"


class SettingsError(ValueError):
    """A barrel setting is unknown or has an invalid value."""


def _default_runtime_base() -> str:
    return tempfile.gettempdir()


# The side processes (``arguments``): a setting names those whose command line carries it.
BROADCASTER = "broadcaster"
STORE_SERVER = "store"
EXPORTER = "exporter"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting: its name, parser, default and documentation.

    ``fixed_at_start``: a reload (HUP) keeps the value in force, because the
    runtime directory or a running side process was made with it.
    ``side_processes``: the side processes that take it on their command line.
    """

    name: str
    parse: Callable[[object], Any]
    default: Callable[[], Any]
    doc: str
    fixed_at_start: bool = False
    side_processes: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "runtime_dir",
        v.existing_dir,
        _default_runtime_base,
        "Directory under which each gunicorn instance creates its private "
        "runtime directory (mode 0700, removed on exit) holding the bus's "
        "ipc sockets. Default: the system temporary directory.",
        fixed_at_start=True,
    ),
    Setting(
        "max_frame_size",
        v.int_between(1024, 256 * 1024 * 1024),
        lambda: 1024 * 1024,
        "Largest bus frame in bytes (one emit with its data, encoded). A "
        "larger emit raises FrameTooLarge in the caller; a larger frame "
        "received from the ipc socket is refused and counted. Default 1 MiB.",
        fixed_at_start=True, side_processes=(BROADCASTER, STORE_SERVER),
    ),
    Setting(
        "websocket_deflate",
        v.parse_bool,
        lambda: False,
        "Accept permessage-deflate when a WebSocket client offers it. Off by "
        "default: on small messages it costs about 5x throughput. Negotiated "
        "without context takeover, so no zlib state is kept per connection.",
    ),
    Setting(
        "websocket_deflate_min_size",
        v.int_between(0, 256 * 1024 * 1024),
        lambda: 1024,
        "With deflate negotiated, messages smaller than this many bytes are "
        "sent uncompressed (compressing them costs more CPU than it saves "
        "bytes). Default 1024.",
    ),
    Setting(
        "gap_timeout",
        v.float_between(0.1, 60.0),
        lambda: 5.0,
        "Seconds a worker holds back a sender's later frames while an earlier one "
        "is missing (it is being resent after a broadcaster restart, or replayed on "
        "request on a Redis bus). After that the gap is counted, logged and skipped. Default 5.",
    ),
    Setting(
        "max_unacked",
        v.int_between(100, 10_000_000),
        lambda: 100_000,
        "Frames a worker keeps for resending until the broadcaster acknowledges them; "
        "past it the oldest is dropped and counted (frames_unrecoverable). Default 100000.",
    ),
    Setting(
        "recovery_max_disconnection",
        v.float_between(1.0, 86_400.0),
        lambda: 120.0,
        "With connection state recovery (BarrelManager(connection_state_recovery=True)): "
        "seconds a worker keeps the session (sid, rooms, data) of a client whose connection "
        "was lost; a client back within it, on any worker, gets it and what it missed. "
        "Default 120, as Node's maxDisconnectionDuration.",
    ),
    Setting(
        "recovery_max_packets",
        v.int_between(100, 10_000_000),
        lambda: 10_000,
        "With connection state recovery: emits each worker keeps to replay to clients "
        "that come back (a reference to each encoded packet). A client that missed older "
        "ones gets a fresh session. Default 10000.",
    ),
    Setting(
        "client_queue_limit",
        v.int_between(10, 1_000_000),
        lambda: 1000,
        "Packets queued for one client that does not read (or does not poll). At the "
        "limit, slow_client_policy applies. Default 1000.",
    ),
    Setting(
        "slow_client_policy",
        v.choice("disconnect", "drop_oldest"),
        lambda: "disconnect",
        "What happens to a client at client_queue_limit: 'disconnect' closes its "
        "session and its connection (it reconnects and resynchronises, counted in "
        "clients_dropped_slow); 'drop_oldest' drops its oldest queued packet for each "
        "new one (counted in packets_dropped_slow). Default disconnect.",
    ),
    Setting(
        "store",
        v.store_backend,
        lambda: "embedded",
        "The shared key/value store (gunicorn_barrel.store): 'embedded' (a side "
        "process keeping it in SQLite, no server needed), a 'redis://host:port/db' URL "
        "(or a 'redis+sentinel://...' or 'redis+cluster://...' one, as for bus), or 'none'. "
        "Default embedded.",
        fixed_at_start=True,
    ),
    Setting(
        "store_path",
        v.absolute_path,
        lambda: "barrel-store.sqlite3",
        "The embedded store's SQLite file (relative paths are taken from gunicorn's "
        "working directory). It outlives gunicorn: stopping or restarting loses no "
        "acknowledged write. Default barrel-store.sqlite3.",
        fixed_at_start=True, side_processes=(STORE_SERVER,),
    ),
    Setting(
        "store_durability",
        v.choice("process", "power"),
        lambda: "process",
        "'process': an acknowledged write survives any crash of the store process "
        "or of gunicorn (SQLite WAL, synchronous=NORMAL); 'power': it also survives "
        "power loss (synchronous=FULL, an fsync per write batch, slower). Default process.",
        fixed_at_start=True, side_processes=(STORE_SERVER,),
    ),
    Setting(
        "store_timeout",
        v.float_between(0.05, 300.0),
        lambda: 5.0,
        "Seconds a store call waits for its answer before raising StoreTimeout. Default 5.",
    ),
    Setting(
        "store_max_value",
        v.int_between(16, 64 * 1024 * 1024),
        lambda: 64 * 1024,
        "Largest store value in bytes (its JSON text); larger values raise "
        "StoreValueError at the call. Default 65536.",
        side_processes=(STORE_SERVER,),
    ),
    Setting(
        "restart_delay",
        v.float_between(0.0, 10.0),
        lambda: 0.1,
        "Seconds the supervisor waits before restarting a broadcaster that "
        "died (doubled while it keeps dying within 2 s of its start, up to 2 s).",
    ),
    Setting(
        "bus",
        v.bus_backend,
        lambda: "zmq",
        "The bus between workers: 'zmq' (a broadcaster side process per gunicorn "
        "instance, nothing to run) or a 'redis://host:port/db', 'rediss://...', "
        "'unix:///path', 'redis+sentinel://h1:26379,h2:26379/master[/db]' or "
        "'redis+cluster://h1:7000,h2:7001' URL: every "
        "worker of every instance using the URL shares one "
        "bus through Redis pub/sub (sharded pub/sub on a cluster; several hosts; see \"Redis bus\"). "
        "With a Redis bus "
        "the store defaults to the same URL, and store = 'embedded' is refused. Default zmq.",
        fixed_at_start=True,
    ),
    Setting(
        "bus_namespace",
        v.namespace,
        lambda: "",
        "With a Redis bus: a name that separates the buses of several apps sharing one "
        "Redis (channels barrel:bus:<namespace>:...). Instances of one app must use the "
        "same. Default empty.",
        fixed_at_start=True,
    ),
    Setting(
        "federation_listen",
        v.tcp_endpoint_or_off,
        lambda: "",
        "tcp://HOST:PORT on which the broadcaster accepts federation links from peer "
        "broadcasters, hubs and emitters (CURVE-authenticated): every key in peers/ that "
        "federation_peers does not dial is expected to dial in, and frames are kept for it "
        "from the broadcaster's start. Empty (default): off.",
        fixed_at_start=True, side_processes=(BROADCASTER,),
    ),
    Setting(
        "federation_peers",
        v.peer_list,
        lambda: "",
        "Peers this broadcaster dials, as NAME=tcp://HOST:PORT,... where NAME is the "
        "peer's public key file peers/NAME.key in federation_keys; frames are kept for "
        "each from the broadcaster's start. Configure each link on one side only. Empty "
        "(default): none.",
        fixed_at_start=True, side_processes=(BROADCASTER,),
    ),
    Setting(
        "federation_keys",
        v.dir_or_off,
        lambda: "",
        "Key directory for federation links: this broadcaster's NAME.key_secret, the "
        "peers' public keys in peers/ and send-only emitters' in emitters/ (made by "
        "gunicorn-barrel-keys). Required with federation_listen or federation_peers.",
        fixed_at_start=True, side_processes=(BROADCASTER,),
    ),
    Setting(
        "federation_queue_limit",
        v.int_between(100, 10_000_000),
        lambda: 100_000,
        "Frames a broadcaster keeps per configured peer (from its start, link up or not) "
        "until the peer acknowledges them (resent when the link comes up or heals); past "
        "it the oldest is dropped and counted (federation_frames_dropped). Default 100000.",
        fixed_at_start=True, side_processes=(BROADCASTER,),
    ),
    Setting(
        "federation_worker_wait",
        v.float_between(0.1, 600.0),
        lambda: 2.0,
        "Seconds a worker that reads nothing from its broadcaster (stopped, stuck) still holds "
        "back the federation acknowledgements: a broadcaster acknowledges a peer's frame only "
        "once every local worker read it, so a broadcaster killed with frames still queued for a "
        "worker loses none (the peer sends them again). Past this wait that worker is left out; "
        "longer keeps it safe longer but lets peers resend more meanwhile. Default 2.",
        fixed_at_start=True, side_processes=(BROADCASTER,),
    ),
    Setting(
        "metrics_path",
        v.http_path_or_off,
        lambda: "",
        "A path of the app's own port (such as /metrics) on which every worker answers GET "
        "with the Prometheus metrics of the whole instance (arbiter, workers, side processes), "
        "before the app sees the request. As public as the app: protect it in front, or use "
        "metrics_listen. Empty (default): off.",
    ),
    Setting(
        "metrics_listen",
        v.listen_address_or_off,
        lambda: "",
        "HOST:PORT on which a side process (the exporter) serves the instance's Prometheus "
        "metrics at any path, apart from the app's port. Empty (default): off.",
        fixed_at_start=True, side_processes=(EXPORTER,),
    ),
    Setting(
        "statsd_interval",
        v.float_between(0.1, 3600.0),
        lambda: 10.0,
        "With gunicorn's statsd_host set: seconds between two sends of barrel's metrics to "
        "statsd, by the exporter side process (counters as the increase since the last send). "
        "Default 10.",
        fixed_at_start=True, side_processes=(EXPORTER,),
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
FIXED_AT_START = tuple(setting.name for setting in SETTINGS if setting.fixed_at_start)


def declared(name: str) -> Setting:
    """The declaration of setting ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


@dataclasses.dataclass(frozen=True)
class BarrelSettings:
    """Validated values of every barrel setting."""

    runtime_dir: str
    max_frame_size: int
    websocket_deflate: bool
    websocket_deflate_min_size: int
    gap_timeout: float
    max_unacked: int
    recovery_max_disconnection: float
    recovery_max_packets: int
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
    federation_worker_wait: float
    metrics_path: str
    metrics_listen: str
    statsd_interval: float


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
            if key.upper() in known_env:  # environment names are case-sensitive
                raise SettingsError(f"environment variable {key} is not read: barrel's variables "
                                    f"are upper case ({key.upper()})")
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
    return BarrelSettings(**_combine(values, store_given))


def _combine(values: dict[str, Any], store_given: bool) -> dict[str, Any]:
    """Settings that depend on each other: the store follows a Redis bus."""
    if values["bus"] == "zmq":
        return values
    if values["federation_listen"] or values["federation_peers"]:
        raise SettingsError(
            "invalid barrel settings: federation_listen/federation_peers link broadcasters, "
            f"and bus={v.safe_url(values['bus'])!r} runs none; instances sharing a Redis bus "
            "need no federation")
    # The embedded store is one per instance and publishes its changes through
    # the zmq broadcaster, which a Redis bus does not start: with instances on
    # several hosts the store must be shared too, so it follows the bus.
    if not store_given:
        return {**values, "store": values["bus"]}
    if values["store"] == "embedded":
        raise SettingsError(
            "invalid barrel settings store='embedded' with bus="
            f"{v.safe_url(values['bus'])!r}: the embedded store needs the zmq bus; with a Redis "
            "bus set store to a redis:// URL (the default: the bus's URL) or 'none'")
    return values


def reference_table() -> str:
    """The settings reference as a reStructuredText list (kept in README.rst)."""
    lines = []
    for setting in SETTINGS:
        lines.append(f"``{setting.name}`` / ``{setting.env}``")
        lines.append(f"    {setting.doc}")
        if setting.fixed_at_start:
            lines.append("    Fixed at start: a reload (HUP) keeps the running value; a restart changes it.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(reference_table())
