"""What every emitter for processes outside gunicorn offers, whatever carries its messages.

``Emitter`` (a federation link, ``sio.emitter``) and ``LocalEmitter`` (the
instance's own bus, ``sio.local_emitter``) fill ``_send``, ``flush`` and
``close``; the messages are the BarrelManager's, made here once.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Self

from gunicorn_barrel.bus import channels


class EmitterClosed(RuntimeError):
    """emit() or event() after close()."""


class EmitterBase:
    """emit() to socket.io clients and event() to the workers' ``gunicorn_barrel.events`` handlers."""

    def __init__(self, channel: str = channels.DEFAULT_SIO_NAME) -> None:
        """``channel``: the BarrelManager's (``BarrelManager(channel=...)``)."""
        self.channel = channels.sio_channel(channel)
        self.host_id = uuid.uuid4().hex

    def emit(self, event: str, data: Any = None, to: str | None = None, room: str | None = None,
             namespace: str = "/", skip_sid: str | None = None) -> None:
        """Emit to the clients of every worker, as ``sio.emit()`` would (no callbacks)."""
        # A tuple is several arguments, None is none (as in BarrelManager.emit).
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        self._send(self.channel, channels.emit_message(self.host_id, event, args, namespace,
                                                       to or room, skip_sid))

    def event(self, name: str, data: Any = None) -> None:
        """Send a named event to the ``gunicorn_barrel.events`` handlers of every worker."""
        self._send(channels.event_channel(name), channels.event_message(data))

    def _send(self, channel: str, payload: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every message was taken over by the bus; False if some still were not."""
        raise NotImplementedError

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, then let go of the connection; returns what flush() returned."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
