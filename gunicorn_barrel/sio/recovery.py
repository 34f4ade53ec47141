"""Connection state recovery (socket.io v4.6's protocol) across the workers of a cluster.

What the client does (socket.io-client >= 4.6): the server's CONNECT answer
carries a private session id ``pid``; each event it receives ends with an
``offset`` argument; after a lost connection it sends ``{pid, offset}`` in its
next CONNECT, and ``socket.recovered`` is true when the answer carries the
same pid.

What barrel does, with ``BarrelManager(connection_state_recovery=True)``:

- every emit without an ack gets an id (``mid``) from its sender, appended to
  its arguments: the offset, the same in every worker;
- every worker sees every emit (all of them travel on the channel of every
  worker) and keeps the last ``max_packets`` in a ``PacketLog``;
- a worker whose client's connection is lost (transport closed or failed, ping
  timeout; not a disconnect asked for) keeps its ``Session`` (sid, rooms, data)
  for ``max_disconnection`` seconds;
- the worker a client reconnects to takes the session from whichever worker
  holds it (a cluster request, answered once), and replays from its own log
  the events after the client's offset that the session's rooms select, then
  the events that arrived meanwhile (``held``), in order, before any newer one.

A session past its time, an offset no longer in the log (more than
``max_packets`` emits ago), or a holder that is gone mean a fresh session, as
in Node. Memory: ``max_packets`` log entries per worker (each a reference to
the already-encoded packet and its rooms), and one small record per
disconnected session until it is taken or expires.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

MAX_DISCONNECTION = 120.0
MAX_PACKETS = 10_000
# engine.io's reasons of a connection lost rather than closed on purpose.
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})


@dataclasses.dataclass(frozen=True)
class Limits:
    max_disconnection: float = MAX_DISCONNECTION
    max_packets: int = MAX_PACKETS


_limits = Limits()


def configure(limits: Limits) -> None:
    """Set this worker's limits (the worker's context does it from the barrel settings)."""
    global _limits
    _limits = limits


def limits() -> Limits:
    return _limits


@dataclasses.dataclass
class Session:
    """A disconnected socket's state, kept by the worker that held it."""

    pid: str
    sid: str
    namespace: str
    rooms: list[Any]
    data: Any
    disconnected_at: float  # monotonic

    def to_answer(self) -> dict[str, Any]:
        return {"pid": self.pid, "sid": self.sid, "namespace": self.namespace,
                "rooms": self.rooms, "data": self.data}

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Session | None:
        sid, namespace, rooms = answer.get("sid"), answer.get("namespace"), answer.get("rooms")
        if not (isinstance(sid, str) and isinstance(namespace, str) and isinstance(rooms, list)):
            return None
        return cls(str(answer.get("pid")), sid, namespace, rooms, answer.get("data"), time.monotonic())


@dataclasses.dataclass(frozen=True)
class LoggedEmit:
    mid: str
    namespace: str
    room: Any  # a room, a list of rooms, or None: everyone
    skip_sid: Any
    message: Mapping[str, Any]  # the bus message: its ``encoded`` packet, or its arguments

    def selects(self, session: Session) -> bool:
        """Whether this emit went to the session's socket (had it been connected)."""
        if self.namespace != session.namespace:
            return False
        skip = self.skip_sid if isinstance(self.skip_sid, list) else [self.skip_sid]
        if session.sid in skip:
            return False
        if self.room is None:
            return True
        rooms = self.room if isinstance(self.room, list) else [self.room]
        return any(r == session.sid or r in session.rooms for r in rooms)


class PacketLog:
    """The last ``limits().max_packets`` emits a worker saw, by mid."""

    def __init__(self) -> None:
        self._entries: collections.deque[tuple[int, LoggedEmit]] = collections.deque()
        self._position: dict[str, int] = {}
        self._count = itertools.count()

    def append(self, entry: LoggedEmit) -> None:
        position = next(self._count)
        self._entries.append((position, entry))
        self._position[entry.mid] = position
        while len(self._entries) > _limits.max_packets:
            _, old = self._entries.popleft()
            self._position.pop(old.mid, None)

    def after(self, mid: str) -> Iterator[LoggedEmit] | None:
        """The emits logged after ``mid``, or None if ``mid`` is not (or no longer) in the log."""
        position = self._position.get(mid)
        if position is None:
            return None
        first = position - self._entries[0][0] + 1
        return (entry for _, entry in itertools.islice(self._entries, first, None))

    def __len__(self) -> int:
        return len(self._entries)


class Sessions:
    """The disconnected sessions this worker holds, by pid, until taken or expired."""

    def __init__(self) -> None:
        self._by_pid: dict[str, Session] = {}

    def keep(self, session: Session) -> None:
        self._expire()
        self._by_pid[session.pid] = session

    def take(self, pid: str) -> Session | None:
        """The session ``pid`` (once: it is forgotten), if held and not expired."""
        self._expire()
        return self._by_pid.pop(pid, None)

    def _expire(self) -> None:
        deadline = time.monotonic() - _limits.max_disconnection
        for pid, session in list(self._by_pid.items()):
            if session.disconnected_at < deadline:
                del self._by_pid[pid]

    def __len__(self) -> int:
        return len(self._by_pid)


class MessageIds:
    """Ids of this manager's emits: unique on the bus, short (they travel to every client)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new prefix (after fork: the parent's ids must not repeat)."""
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}.{next(self._count):x}"


def new_pid() -> str:
    return secrets.token_urlsafe(12)


def missed(log: PacketLog, session: Session, offset: Any) -> list[LoggedEmit] | None:
    """The logged emits after ``offset`` that went to ``session``'s socket; None: cannot recover."""
    entries = log.after(offset) if isinstance(offset, str) else None
    if entries is None:
        return None
    return [entry for entry in entries if entry.selects(session)]


@dataclasses.dataclass(frozen=True)
class Restoring:
    """A session being restored on a new connection, and the emits it missed."""

    session: Session
    missed: list[LoggedEmit]


class RecoveryState:
    """One recovery-enabled manager's log, held sessions, pids and sockets being restored."""

    def __init__(self) -> None:
        self.log = PacketLog()
        self.sessions = Sessions()
        self.ids = MessageIds()
        self.pids: dict[str, str] = {}  # sid -> pid, of connected sockets
        self.restoring: dict[tuple[str, str], Restoring] = {}  # (eio_sid, namespace) -> ...
        # sid -> messages for a socket being restored, sent once its CONNECT went out
        self.held: dict[str, list[Mapping[str, Any]]] = {}

    def pid_for(self, sid: str) -> str:
        """The pid the CONNECT answer of ``sid`` carries: its restored one, or a new one."""
        pid = self.pids.get(sid)
        if pid is None:
            pid = self.pids[sid] = new_pid()
        return pid

    def log_emit(self, message: Mapping[str, Any]) -> None:
        mid = message.get("mid")
        if isinstance(mid, str):
            self.log.append(LoggedEmit(mid, message.get("namespace") or "/", message.get("room"),
                                       message.get("skip_sid"), message))
