"""The whole cluster as one socket.io server: every worker of every instance on the bus.

python-socketio's manager only relays emits, room changes of one sid and
disconnects between processes. ``Cluster`` adds what Node socket.io's
adapters offer across servers::

    from gunicorn_barrel.cluster import Cluster

    sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())
    cluster = Cluster(sio)

    reply = cluster.fetch_sockets(room="lobby")     # every worker's sockets in "lobby"
    for s in reply.value:
        print(s.sid, s.rooms, s.handshake["address"], s.pid)
    if reply.missing:
        print(reply.missing, "workers did not answer in time")

    cluster.sockets_join("vip", room="lobby")         # io.in("lobby").socketsJoin("vip")
    cluster.server_side_call("reload", "config-7")  # answers of every other worker

Each call is one round trip on the bus: a request to every other worker
(the workers alive by their heartbeats, ``sio.peers``), and their answers on
this worker's own channel. It returns when every one answered, or after
``timeout`` seconds with what arrived; ``Reply.missing`` counts the workers
that did not answer (stopped, overloaded, cut off, or failed: see
``Reply.errors``). A call never raises because another worker is dead or
slow. Call it from a request or socket.io event handler (a greenlet of its
own), not from a bus event handler (``events.on``): those run in the bus
listener, which must be free to receive the answers.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from gunicorn_barrel.sio import local_answers
from gunicorn_barrel.sio.cluster_node import ClusterNode, ServerEventHandler
from gunicorn_barrel.sio.manager import BarrelManager

__all__ = ["Cluster", "RemoteSocket", "Reply", "DEFAULT_TIMEOUT"]

# Node socket.io's cluster adapter waits 5 s for the other servers too.
DEFAULT_TIMEOUT = 5.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Reply(Generic[T]):
    """A cluster call's result: ``value`` merged from this worker and every worker that answered."""

    value: T
    answered: int  # other workers whose whole answer arrived
    missing: int  # other workers (alive when asked) with no answer in time, or a failed one
    errors: tuple[str, ...] = ()  # what the failed ones said

    @property
    def complete(self) -> bool:
        """Every worker of the cluster answered."""
        return self.missing == 0


@dataclasses.dataclass(frozen=True)
class RemoteSocket:
    """A socket held by any worker of any instance, as Node's ``fetchSockets()`` describes it."""

    sid: str
    namespace: str
    rooms: list[Any]  # as python-socketio's rooms(): its own sid among them
    handshake: dict[str, Any]  # headers, query, auth, address, issued (ms), url, secure
    data: dict[str, Any]  # python-socketio's session of the socket (save_session/get_session)
    instance: str  # the gunicorn instance's tag (gunicorn_barrel.runtime.sids.instance_tag)
    pid: int  # the worker holding it
    client_id: str = ""  # its engine.io session id
    transport: str = ""  # "websocket" or "polling"

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> RemoteSocket:
        def mapping(key: str) -> dict[str, Any]:
            value = answer.get(key)
            return value if isinstance(value, dict) else {}

        rooms = answer.get("rooms")
        return cls(str(answer.get("sid")), str(answer.get("namespace")),
                   rooms if isinstance(rooms, list) else [], mapping("handshake"), mapping("data"),
                   str(answer.get("instance")), int(answer.get("pid") or 0),
                   str(answer.get("client_id") or ""), str(answer.get("transport") or ""))


Rooms = str | Iterable[str] | None


def _room_list(room: Rooms) -> str | list[str] | None:
    return room if room is None or isinstance(room, str) else list(room)


class Cluster:
    """Cluster-wide operations on the sockets of ``sio`` (a server with a BarrelManager)."""

    def __init__(self, sio: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        manager = getattr(sio, "manager", None)
        if not isinstance(manager, BarrelManager) or manager.write_only:
            raise TypeError("gunicorn_barrel.cluster.Cluster needs a socketio.Server whose "
                            "client_manager is a (not write-only) gunicorn_barrel.BarrelManager")
        self.sio = sio
        self.manager = manager
        self.timeout = timeout

    @property
    def _node(self) -> ClusterNode:
        self.manager._attach()  # BusNotConnected outside a barrel worker: a clear error
        return self.manager.node

    def _ask(self, kind: str, namespace: str, params: dict[str, Any],
             timeout: float | None) -> tuple[list[Any], int, int, tuple[str, ...]]:
        pending, missing = self._node.request(kind, namespace, params,
                                              self.timeout if timeout is None else timeout)
        return pending.values, pending.answered, missing, tuple(pending.errors)

    def server_count(self) -> int:
        """Workers in the cluster that this one knows alive, itself included (Node: serverCount())."""
        return 1 + len(self._node.alive_peers())

    def fetch_sockets(self, room: Rooms = None, namespace: str = "/",
                      timeout: float | None = None) -> Reply[list[RemoteSocket]]:
        """The sockets of ``namespace`` in ``room`` (a room, several, or None: all), on every worker."""
        room = _room_list(room)
        local = list(local_answers.fetch_sockets(self.manager, namespace, room))
        remote, answered, missing, errors = self._ask("fetch_sockets", namespace, {"room": room}, timeout)
        sockets = [RemoteSocket.from_answer(a) for a in local + remote if isinstance(a, dict)]
        return Reply(sockets, answered, missing, errors)

    def _count_everywhere(self, kind: str, namespace: str, params: dict[str, Any], local: int,
                          timeout: float | None) -> Reply[int]:
        counts, answered, missing, errors = self._ask(kind, namespace, params, timeout)
        return Reply(local + sum(c for c in counts if isinstance(c, int)), answered, missing, errors)

    def sockets_join(self, rooms: str | Iterable[str], room: Rooms = None, namespace: str = "/",
                     timeout: float | None = None) -> Reply[int]:
        """Make the sockets in ``room`` (None: all) join ``rooms``, wherever they are; how many did."""
        return self._change_rooms(rooms, room, namespace, timeout, join=True)

    def sockets_leave(self, rooms: str | Iterable[str], room: Rooms = None, namespace: str = "/",
                      timeout: float | None = None) -> Reply[int]:
        """Make the sockets in ``room`` (None: all) leave ``rooms``, wherever they are; how many did."""
        return self._change_rooms(rooms, room, namespace, timeout, join=False)

    def _change_rooms(self, rooms: str | Iterable[str], room: Rooms, namespace: str,
                      timeout: float | None, join: bool) -> Reply[int]:
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        room = _room_list(room)
        local = local_answers.change_rooms(self.manager, namespace, room, names, join)
        return self._count_everywhere("sockets_join" if join else "sockets_leave", namespace,
                                      {"room": room, "rooms": names}, local, timeout)

    def disconnect_sockets(self, room: Rooms = None, namespace: str = "/", close: bool = False,
                           timeout: float | None = None) -> Reply[int]:
        """Disconnect the sockets in ``room`` (None: all) from ``namespace``, wherever they are
        (``close``: their whole connection, every namespace); how many."""
        room = _room_list(room)
        local = local_answers.disconnect_sockets(self.manager, namespace, room, close)
        return self._count_everywhere("disconnect_sockets", namespace, {"room": room, "close": close},
                                      local, timeout)

    def rooms_of(self, sid: str, namespace: str = "/",
                 timeout: float | None = None) -> Reply[list[Any] | None]:
        """The rooms of ``sid`` wherever it is held; ``value`` None if no worker that answered holds it."""
        if self.manager.is_connected(sid, namespace):
            return Reply(local_answers.rooms_of(self.manager, namespace, sid)[0], 0, 0)
        found, answered, missing, errors = self._ask("rooms_of", namespace, {"sid": sid}, timeout)
        return Reply(found[0] if found else None, answered, missing, errors)

    def room_counts(self, namespace: str = "/", timeout: float | None = None) -> Reply[dict[Any, int]]:
        """Every room of ``namespace`` with its members on all workers (each sid's own room left out)."""
        counts: Counter[Any] = Counter()
        local = local_answers.room_counts(self.manager, namespace)
        remote, answered, missing, errors = self._ask("room_counts", namespace, {}, timeout)
        for pair in local + remote:
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int):
                counts[pair[0]] += pair[1]
        return Reply(dict(counts), answered, missing, errors)

    # -- server-side events -------------------------------------------------------------

    def on(self, event: str, handler: ServerEventHandler | None = None) -> Any:
        """Handle the server-side event ``event`` from other workers: ``handler(*args)``; what it
        returns is this worker's answer to ``server_side_call``. Usable as a decorator."""
        def register(func: ServerEventHandler) -> ServerEventHandler:
            self.manager.node.server_handlers[event] = func
            return func

        return register if handler is None else register(handler)

    def server_side_emit(self, event: str, *args: Any) -> None:
        """Send ``event`` to every other worker's handler (not this one's), answers not awaited."""
        self._node.tell("server_event", "/", {"event": event, "args": list(args), "answer": False})

    def server_side_call(self, event: str, *args: Any,
                         timeout: float | None = None) -> Reply[list[Any]]:
        """Send ``event`` to every other worker's handler; their return values (one per worker with
        a handler), within ``timeout``."""
        answers, answered, missing, errors = self._ask(
            "server_event", "/", {"event": event, "args": list(args), "answer": True}, timeout)
        return Reply(answers, answered, missing, errors)

