"""The record of this gunicorn instance: its settings in force and its runtime directory.

The arbiter's hooks write it (on_starting, on_reload); every worker inherits
it across fork and reads it. Nothing else writes it.
"""
from __future__ import annotations

from gunicorn_barrel.config.settings import BarrelSettings

_settings: BarrelSettings | None = None
_runtime_dir: str | None = None


def settings() -> BarrelSettings | None:
    """The barrel settings in force in this process, or None when the hooks are not running."""
    return _settings


def runtime_dir() -> str | None:
    """This instance's private runtime directory, or None before on_starting."""
    return _runtime_dir


def record(settings: BarrelSettings | None, runtime_dir: str | None) -> None:
    """Set the record (the arbiter's hooks only)."""
    global _settings, _runtime_dir
    _settings, _runtime_dir = settings, runtime_dir
