"""The shared key/value store: one API, two backends (embedded side process, Redis).

Keys are strings (at most MAX_KEY_BYTES of UTF-8); values are JSON data
(dicts, lists, strings, numbers, booleans, None) of at most ``store_max_value``
bytes once encoded. Every change is published to every worker; ``watch``
delivers the changes of a key prefix, in order per key, in each worker.
"""
from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable
from typing import Any

MAX_KEY_BYTES = 1024


class StoreError(Exception):
    """The store could not do what was asked."""


class StoreTimeout(StoreError):
    """The backend did not answer in time (it may be dead or overloaded)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached."""


class StoreValueError(StoreError, ValueError):
    """A key or value the store does not accept (not a string, not JSON, too large)."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One change of one key, as watchers see it."""

    op: str  # "set", "delete" or "expire"
    key: str
    value: Any  # the new value; None for delete and expire
    version: int  # increases with every change of this key


Watcher = Callable[[Change], None]


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise StoreValueError(f"keys must be strings, got {type(key).__name__}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise StoreValueError("keys must be valid Unicode (no lone surrogates)") from None
    if not 0 < size <= MAX_KEY_BYTES:
        raise StoreValueError(f"keys must have 1 to {MAX_KEY_BYTES} bytes")
    return key


def encode_value(value: object, max_bytes: int) -> str:
    """The JSON text of ``value``; StoreValueError if it is not JSON data or too large."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreValueError(f"values must be JSON data: {exc}") from None
    if len(text.encode()) > max_bytes:
        raise StoreValueError(f"value of {len(text.encode())} bytes is over the limit of {max_bytes}")
    return text


def check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < 10**9:
        raise StoreValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


class Store(abc.ABC):
    """What every backend offers; all calls are greenlet-friendly and bounded in time."""

    @abc.abstractmethod
    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent or expired."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Set ``key``; with ``ttl`` it expires after that many seconds."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer value (absent counts as 0), atomically; the new value."""

    @abc.abstractmethod
    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None = None) -> bool:
        """Set ``key`` to ``value`` only if it holds ``expected`` (None: only if absent)."""

    @abc.abstractmethod
    def scan(self, prefix: str, limit: int = 1000) -> dict[str, Any]:
        """Up to ``limit`` keys starting with ``prefix``, with their values."""

    @abc.abstractmethod
    def watch(self, prefix: str, callback: Watcher) -> None:
        """Call ``callback(change)`` in this worker for every change of a key with ``prefix``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; safe to call twice."""

    def counters(self) -> dict[str, int]:
        """This backend's counters in this process (none by default)."""
        return {}
