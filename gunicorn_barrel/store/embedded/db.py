"""The embedded store's SQLite side: every operation of the store API, on one connection.

Writes are applied once even when a worker sends a request again (it does
after the store process restarted under its call, not knowing whether the
request was committed): each write's answer is kept in the table ``applied``
under its client's id and request id, in the transaction of the write
itself, so a committed write and its record exist together or not at all,
whatever ``store_durability``. Records are dropped once their client has
stopped waiting (its ``keep`` seconds, the store_timeout, are over).
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from gunicorn_barrel.store.base import (
    StoreValueError,
    check_key,
    check_ttl,
    encode_value,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_KEEP_MARGIN = 5.0  # seconds an applied record outlives its client's wait
_MAX_KEEP = 3600.0
_MAX_CLIENT_ID = 32

class KeyValueDB:
    """The SQLite side: every operation of the store API, on one connection."""

    def __init__(self, path: str, durability: str, max_value: int) -> None:
        self.max_value = max_value
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=" + ("FULL" if durability == "power" else "NORMAL"))
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "expires REAL, version INTEGER NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS applied (client BLOB NOT NULL, id INTEGER NOT NULL, "
            "result TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (client, id)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS applied_expires ON applied (expires)")
        self.version = self.db.execute("SELECT coalesce(max(version), 0) FROM kv").fetchone()[0]
        self.changes: list[dict[str, Any]] = []

    def applied(self, client: bytes, request_id: int) -> tuple[bool, Any]:
        """(True, its result) if this write request was applied already, else (False, None)."""
        row = self.db.execute("SELECT result FROM applied WHERE client = ? AND id = ?",
                              (client, request_id)).fetchone()
        return (True, json.loads(row[0])) if row is not None else (False, None)

    def remember(self, client: bytes, request_id: int, result: Any, keep: float) -> None:
        """Record a write's result until its client has stopped waiting for it."""
        self.db.execute("INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
                        (client, request_id, json.dumps(result), time.time() + keep + _KEEP_MARGIN))

    def _row(self, key: str) -> tuple[str, int] | None:
        row = self.db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row[1] is not None and row[1] <= time.time():
            self._remove(key, "expire")
            return None
        return row[0], row[1]

    def _write(self, key: str, text: str, ttl: float | None) -> None:
        self.version += 1
        expires = time.time() + ttl if ttl is not None else None
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)", (key, text, expires, self.version))
        self.changes.append({"op": "set", "key": key, "value": text, "version": self.version})

    def _remove(self, key: str, op: str) -> bool:
        if self.db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
            return False
        self.version += 1
        self.changes.append({"op": op, "key": key, "value": None, "version": self.version})
        return True

    def get(self, key: str) -> Any:
        row = self._row(check_key(key))
        return {"found": row is not None, "value": row[0] if row else None}

    def set(self, key: str, value: str, ttl: float | None) -> Any:
        text = encode_value(json.loads(value), self.max_value)
        self._write(check_key(key), text, check_ttl(ttl))
        return True

    def delete(self, key: str) -> Any:
        return self._remove(check_key(key), "delete")

    def incr(self, key: str, amount: int) -> Any:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise StoreValueError(f"incr amount must be an integer, got {amount!r}")
        if not INT64_MIN <= amount <= INT64_MAX:
            raise StoreValueError(f"incr amount must fit in 64 bits, got {amount!r}")
        row = self._row(check_key(key))
        current = json.loads(row[0]) if row else 0
        if isinstance(current, bool) or not isinstance(current, int):
            raise StoreValueError(f"incr needs an integer value at {key!r}")
        if not INT64_MIN <= current + amount <= INT64_MAX:
            # As Redis: a store of 64-bit counters (and msgpack answers no larger).
            raise StoreValueError(f"incr of {key!r} by {amount} would overflow 64 bits")
        self._write(key, json.dumps(current + amount), None if row is None or row[1] is None
                    else max(row[1] - time.time(), 0.001))
        return current + amount

    def compare_and_set(self, key: str, expected: str, value: str, ttl: float | None) -> Any:
        row = self._row(check_key(key))
        wanted = json.loads(expected)
        if wanted is None:  # None means "absent": a stored null is not absent
            if row is not None:
                return False
        elif row is None or _canonical(wanted) != _canonical(json.loads(row[0])):
            return False
        self._write(key, encode_value(json.loads(value), self.max_value), check_ttl(ttl))
        return True

    def scan(self, prefix: str, limit: int) -> Any:
        if not isinstance(prefix, str) or not isinstance(limit, int) or not 0 < limit <= 100_000:
            raise StoreValueError("scan needs a string prefix and a limit in 1..100000")
        rows = self.db.execute(
            "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ? AND (expires IS NULL OR expires > ?) "
            "ORDER BY key LIMIT ?", (len(prefix), prefix, time.time(), limit),
        ).fetchall()
        return dict(rows)

    def sweep(self) -> None:
        """Remove expired keys (each an "expire" change) and the records nobody waits for."""
        now = time.time()
        for (key,) in self.db.execute("SELECT key FROM kv WHERE expires <= ?", (now,)).fetchall():
            self._remove(key, "expire")
        self.db.execute("DELETE FROM applied WHERE expires <= ?", (now,))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


WRITES = frozenset({"set", "delete", "incr", "compare_and_set"})
OPS = {
    "get": ("key",),
    "set": ("key", "value", "ttl"),
    "delete": ("key",),
    "incr": ("key", "amount"),
    "compare_and_set": ("key", "expected", "value", "ttl"),
    "scan": ("prefix", "limit"),
}


def write_identity(request: dict[str, Any]) -> tuple[bytes, int, float] | None:
    """(client id, request id, keep) of a write that must be applied once, or None."""
    client, request_id, keep = request.get("client"), request.get("id"), request.get("keep")
    if (request.get("op") not in WRITES or not isinstance(client, bytes)
            or not 0 < len(client) <= _MAX_CLIENT_ID or not isinstance(request_id, int)
            or isinstance(keep, bool) or not isinstance(keep, (int, float))):
        return None
    return client, request_id, min(max(float(keep), 0.0), _MAX_KEEP)
