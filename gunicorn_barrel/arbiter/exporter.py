"""Whether the arbiter runs the exporter side process, and what it tells it of gunicorn's statsd settings.

The exporter (``python -m gunicorn_barrel.metrics.exporter``) serves the
instance's metrics on ``metrics_listen`` and sends them to statsd when
gunicorn's ``statsd_host`` is set, with gunicorn's ``statsd_prefix`` and
``dogstatsd_tags``. Without either it is not started.
"""
from __future__ import annotations

from typing import Any

from gunicorn_barrel.config.settings import BarrelSettings

MODULE = "gunicorn_barrel.metrics.exporter"


def wanted(settings: BarrelSettings, cfg: Any) -> bool:
    return bool(settings.metrics_listen or getattr(cfg, "statsd_host", None))


def statsd_args(cfg: Any) -> list[str]:
    """The exporter's statsd flags from gunicorn's config (none when statsd_host is not set)."""
    host = getattr(cfg, "statsd_host", None)
    if not host:
        return []
    if isinstance(host, str):  # gunicorn's unix://PATH, parsed to the path
        address = f"unix:{host}"
    else:
        name, port = host
        address = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    return [f"--statsd-host={address}", f"--statsd-prefix={cfg.statsd_prefix or ''}",
            f"--dogstatsd-tags={getattr(cfg, 'dogstatsd_tags', '') or ''}"]
