"""Forwarding store changes to a socket.io room, in every worker."""
from __future__ import annotations

from typing import Any

from gunicorn_barrel.store.base import Change, Store


def forward_to_room(
    store: Store, sio: Any, prefix: str, room: str, event: str = "store_change", namespace: str = "/"
) -> None:
    """Emit every change of keys under ``prefix`` to ``room`` as ``event``.

    Every worker must call it: calling it at app import (with or without
    ``--preload``) does that, and like ``store.watch`` it takes effect when the
    worker's store connects. Each worker sees every change and delivers it to
    the room's members it holds itself (``ignore_queue``), so each member gets
    each change once.
    """

    def emit(change: Change) -> None:
        sio.emit(event, {"op": change.op, "key": change.key, "value": change.value,
                         "version": change.version}, room=room, namespace=namespace, ignore_queue=True)

    store.watch(prefix, emit)
