"""The versions of other libraries barrel is tested with, and the error when one is outside them.

``TESTED`` is the one declaration of the range: setup.cfg's install_requires
carries the same bounds (tests/test_compat.py checks that they agree), the
oldest ones are what the CI matrix installs as its oldest, and the worker
checks them at start. The upper bound is the next minor version after the
newest tested one.

A library whose internals barrel patches or reads (``patched``) must be in
its range: below or above it, the worker refuses to start. A library barrel
only uses through its public API (pyzmq) must not be older than the oldest
tested; a newer one only gets a warning.

This module imports nothing but the standard library and ``packaging``: a
gunicorn config file may import it in the arbiter.
"""
from __future__ import annotations

import dataclasses
from importlib import metadata

from packaging.version import InvalidVersion, Version


@dataclasses.dataclass(frozen=True)
class Tested:
    """The versions of one distribution barrel is tested with: ``oldest`` <= version < ``below``."""

    dist: str
    oldest: str
    below: str
    patched: bool  # barrel patches or reads its internals

    def requirement(self) -> str:
        """The install_requires line (no upper bound for a library used through its public API)."""
        return f"{self.dist}>={self.oldest},<{self.below}" if self.patched else f"{self.dist}>={self.oldest}"

    def describe(self) -> str:
        return f"{self.dist} >={self.oldest},<{self.below}"


TESTED: tuple[Tested, ...] = (
    Tested("gunicorn", "27", "27.1", patched=True),
    Tested("gevent", "24.10.1", "26.10", patched=True),
    Tested("pyzmq", "26", "27.4", patched=False),
    Tested("python-socketio", "5.14", "5.19", patched=True),
    Tested("python-engineio", "4.13.2", "4.16", patched=True),
)


def tested(dist: str) -> Tested:
    """The tested range of ``dist`` (one of TESTED)."""
    return next(t for t in TESTED if t.dist == dist)


class IncompatibleLibrary(RuntimeError):
    """A library barrel depends on is outside its tested versions, or a patched target changed shape."""

    def __init__(self, dist: str, what: str) -> None:
        self.dist = dist
        self.version = installed_version(dist)
        self.what = what
        super().__init__(
            f"{dist} {self.version or '(not installed)'}: {what}. gunicorn_barrel is tested with "
            f"{tested(dist).describe()}: install a version in that range "
            f"(pip install '{tested(dist).requirement()}')"
        )


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> list[str]:
    """Raise IncompatibleLibrary for a library outside its range; return warnings for the tolerated ones."""
    notes = []
    for spec in TESTED:
        found = installed_version(spec.dist)
        if found is None:
            raise IncompatibleLibrary(spec.dist, "not installed")
        try:
            version = Version(found)
        except InvalidVersion:
            raise IncompatibleLibrary(spec.dist, f"version {found!r} cannot be compared") from None
        if version < Version(spec.oldest):
            raise IncompatibleLibrary(spec.dist, f"older than {spec.oldest}, the oldest version tested")
        if version.release[:len(Version(spec.below).release)] >= Version(spec.below).release:
            what = "newer than the versions tested"
            if spec.patched:
                raise IncompatibleLibrary(spec.dist, what + ", and barrel patches its internals")
            notes.append(f"{spec.dist} {found}: {what}; barrel uses only its public API")
    return notes
