"""The kinds of values settings take: parsers that validate them, and how to show a URL safely.

Each parser takes the raw value (a config file's object or an environment
variable's or a command line's text) and returns the value to use, or raises
ValueError saying what was expected. The settings (``settings.SETTINGS``)
and the side processes' command lines (``arguments``) use the same ones.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit


def parse_bool(raw: object) -> bool:
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


def int_between(low: int, high: int) -> Callable[[object], int]:
    return _number_between(int, low, high)


def float_between(low: float, high: float) -> Callable[[object], float]:
    return _number_between(float, low, high)


def choice(*allowed: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def store_backend(raw: object) -> str:
    value = str(raw).strip()
    if value in ("embedded", "none") or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    if is_sentinel(value) or is_cluster(value):
        return redis_url(value)
    raise ValueError(f"expected 'embedded', 'none' or a redis:// URL, got {raw!r}")


_REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names a master through Sentinel (``redis+sentinel://``)."""
    return url.startswith(SENTINEL_SCHEME + "://")


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return url.startswith(CLUSTER_SCHEME + "://")


@dataclasses.dataclass(frozen=True)
class SentinelAddress:
    """A Redis master found through Sentinel: the parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the master's (and its replicas'); the Sentinels' own is not supported


def sentinel_address(value: str) -> SentinelAddress:
    """Parse ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]``."""
    shown = safe_url(value)
    prefix = SENTINEL_SCHEME + "://"
    if not value.startswith(prefix):
        raise ValueError(f"expected a {prefix} URL, got {shown!r}")
    rest = value[len(prefix):]
    if "?" in rest or "#" in rest:
        raise ValueError(f"a {prefix} URL takes no query or fragment, got {shown!r}")
    netloc, _, path = rest.partition("/")
    username, password, sentinels = _hosts(netloc, shown, "redis+sentinel://h1:26379,h2:26379/mymaster")
    names = path.split("/") if path else []
    if not names or not names[0] or len(names) > 2:
        raise ValueError(f"a {prefix} URL names the master after the Sentinels "
                         f"(redis+sentinel://h1:26379,h2:26379/mymaster[/db]), got {shown!r}")
    if len(names) == 2 and not names[1].isdigit():
        raise ValueError(f"the database in a Redis URL is a number, got {shown!r}")
    return SentinelAddress(sentinels, unquote(names[0]), int(names[1]) if len(names) == 2 else 0,
                           username, password)


@dataclasses.dataclass(frozen=True)
class ClusterAddress:
    """A Redis Cluster: the parts of a ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]  # where to learn the cluster's layout; the rest is found
    username: str | None = None
    password: str | None = None


def cluster_address(value: str) -> ClusterAddress:
    """Parse ``redis+cluster://[[user]:password@]host:port[,host:port...]``."""
    shown = safe_url(value)
    prefix = CLUSTER_SCHEME + "://"
    if not value.startswith(prefix):
        raise ValueError(f"expected a {prefix} URL, got {shown!r}")
    netloc, _, path = value[len(prefix):].partition("/")
    if path.strip("/") or "?" in netloc or "#" in netloc:
        raise ValueError(f"a {prefix} URL names nodes only (a cluster has one database), got {shown!r}")
    username, password, nodes = _hosts(netloc, shown, "redis+cluster://h1:7000,h2:7001")
    return ClusterAddress(nodes, username, password)


def _hosts(netloc: str, shown: str, example: str
           ) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """(username, password, ((host, port), ...)) of ``[[user]:password@]h1:p1[,h2:p2...]``."""
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) if colon else None
    found = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"each server is host:port ({example}), got {item!r} in {shown!r}")
        found.append((host, int(port)))
    return username, password, tuple(found)


def redis_url(value: str) -> str:
    """``value`` if it is a usable Redis URL (checked without connecting), else ValueError."""
    if is_sentinel(value):
        sentinel_address(value)
        return value
    if is_cluster(value):
        cluster_address(value)
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"unparsable Redis URL {safe_url(value)!r}: {exc}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError("expected a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
                         f"URL, got {safe_url(value)!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"a unix:// Redis URL needs a socket path, got {safe_url(value)!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"a Redis URL needs a host (redis://host:port/db), got {safe_url(value)!r}")
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError("the database in a Redis URL is a number (redis://h:6379/0), "
                         f"got {safe_url(value)!r}")
    return value


def bus_backend(raw: object) -> str:
    value = str(raw).strip()
    if value == "zmq":
        return value
    if "://" not in value:
        raise ValueError("expected 'zmq' or a redis://, rediss://, unix://, redis+sentinel:// or "
                         f"redis+cluster:// URL, got {value!r}")
    return redis_url(value)


def namespace(raw: object) -> str:
    value = str(raw).strip()
    if len(value) > 64 or not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"expected up to 64 letters, digits, '-', '_' or '.', got {raw!r}")
    return value


def absolute_path(raw: object) -> str:
    path = str(raw)
    if not path:
        raise ValueError("must not be empty")
    return os.path.abspath(path)


def existing_dir(raw: object) -> str:
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


def dir_or_off(raw: object) -> str:
    path = str(raw).strip()
    if path and not os.path.isdir(path):
        raise ValueError(f"directory {path!r} does not exist (make keys with gunicorn-barrel-keys)")
    return os.path.abspath(path) if path else ""


def tcp_endpoint_or_off(raw: object) -> str:
    value = str(raw).strip()
    if value and not _is_tcp(value):
        raise ValueError(f"expected tcp://HOST:PORT or an empty string (off), got {raw!r}")
    return value


def http_path_or_off(raw: object) -> str:
    """A URL path such as ``/metrics`` (no query, no spaces), or empty (off)."""
    value = str(raw).strip()
    if value and (not value.startswith("/") or any(ch in value for ch in "?# \t") or value == "/"):
        raise ValueError(f"expected a path such as /metrics, or an empty string (off), got {raw!r}")
    return value


def listen_address_or_off(raw: object) -> str:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) to listen on, or empty (off)."""
    value = str(raw).strip()
    if value:
        parse_listen_address(value)
    return value


def parse_listen_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9200"`` -> ("127.0.0.1", 9200); ``"[::1]:9200"`` -> ("::1", 9200)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (such as 127.0.0.1:9200), got {text!r}")
    return host, int(port)


def peer_list(raw: object) -> str:
    """A federation peer list (its text: ``parse_peers`` reads it)."""
    value = str(raw).strip()
    parse_peers(value)
    return value


def parse_peers(text: str) -> list[tuple[str, str]]:
    """``"b=tcp://host:7001,c=tcp://host:7002"`` -> [("b", "tcp://host:7001"), ...]."""
    peers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, endpoint = item.partition("=")
        if not sep or not name.strip() or not _is_tcp(endpoint.strip()):
            raise ValueError(f"expected NAME=tcp://HOST:PORT[,...], got {item!r}")
        peers.append((name.strip(), endpoint.strip()))
    return peers


def _is_tcp(endpoint: str) -> bool:
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    return endpoint.startswith("tcp://") and bool(sep and host) and port.isdigit()


def safe_url(url: str) -> str:
    """``url`` without its password or query (which may hold one), for messages and logs.

    Works on the text, so that a URL refused for a bad port or database is
    still shown, masked, in the message that refuses it.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = user.partition(":")[0] + ":***"
    return f"{parts.scheme}://{user}{at}{host}{parts.path}"
