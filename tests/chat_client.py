"""A python-socketio client of the chat demo (demos/chat), for the tests that run it."""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import socketio

from tests.harness import wait_for


class ChatClient:
    """A chat participant that records the hello, chat, system and announcement events it receives."""

    def __init__(self, url: str, transports: tuple[str, ...] = ("polling", "websocket")) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.lock = threading.Lock()
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in ("hello", "chat", "system", "announcement"):
            self.sio.on(event, self._recorder(event))
        self.sio.connect(url, transports=list(transports), wait_timeout=10)
        hello = wait_for(lambda: self.got("hello"), 10, "hello on connect")[0]
        me = self.sio.call("whoami", None, timeout=10)
        self.pid: int = me["pid"]
        self.sid: str = me["sid"]
        self.hello: dict[str, Any] = hello

    def _recorder(self, event: str) -> Callable[[dict[str, Any]], None]:
        def record(data: dict[str, Any]) -> None:
            with self.lock:
                self.received[event].append(data)

        return record

    def got(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received[event])

    def texts(self, room: str | None = None) -> list[str]:
        return [m["text"] for m in self.got("chat") if room is None or m["room"] == room]

    def call(self, event: str, data: Any = None) -> Any:
        return self.sio.call(event, data, timeout=10)

    def join(self, room: str, nick: str) -> None:
        reply = self.call("join", {"room": room, "nick": nick})
        assert reply == {"ok": True, "room": room, "nick": nick, "pid": self.pid}

    def say(self, text: str) -> None:
        assert self.call("say", {"text": text}) == {"ok": True}

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass
