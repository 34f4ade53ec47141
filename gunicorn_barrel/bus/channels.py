"""Bus channel names and the messages on them, declared once. Sans-io.

Channels (a zeromq SUB socket matches topics by prefix: no worker's channel
starts with everyone's or with another worker's, so the broadcaster's PUB
socket sends one worker's messages to that worker only)::

    sio:<name>                  socket.io messages for every worker (BarrelManager, Emitter)
    sio@<tag>.<pid>:<name>      for one worker: a sid's owner, an ack's origin. <tag> is the
                                instance's, so the name is unique on a bus instances share
    ev:<event>                  gunicorn_barrel.events
    store                       the embedded store's changes
    \\x00hb, \\x00nack            the bus's own: the broadcaster's heartbeat, a Redis bus
                                receiver's request to replay missing frames

Socket.io channels and named events cross hosts on federation links
(``crosses_hosts``); the store's and the bus's own stay on their instance. On
a Redis bus, channel C of namespace N is the Redis channel ``barrel:bus:N:C``.

Messages are msgpack maps (``wire``); their keys are typed here. The
socket.io messages are python-socketio's ``PubSubManager`` format, plus
``encoded`` (an emit's packet, encoded once by its sender).
"""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

SIO_PREFIX = "sio:"
SIO_WORKER_PREFIX = "sio@"
EVENT_PREFIX = "ev:"
STORE_CHANGES = "store"
RESERVED_PREFIX = "\x00"
HEARTBEAT = "\x00hb"
NACK = "\x00nack"
# A worker's answer to a heartbeat that asks for one (federation.delivery): pid, heartbeat number.
ECHO_TOPIC = b"\x00echo"
_ECHO = struct.Struct("!IQ")
# The payload key of a Redis bus tick frame (a seq no handler sees); refused in user payloads.
TICK_KEY = "\x00tick"
REDIS_PREFIX = "barrel:bus:"
DEFAULT_SIO_NAME = "socketio"

_CROSSING_HOSTS = tuple(p.encode() for p in (SIO_PREFIX, SIO_WORKER_PREFIX, EVENT_PREFIX))


# -- names ---------------------------------------------------------------------

def sio_channel(name: str = DEFAULT_SIO_NAME) -> str:
    """The channel of a BarrelManager's (or Emitter's) messages for every worker."""
    return SIO_PREFIX + name


def worker_name(instance_tag: str, pid: int) -> str:
    """One worker on a bus that several instances may share."""
    return f"{instance_tag}.{pid}"


def worker_channel(worker: str, name: str = DEFAULT_SIO_NAME) -> str:
    """The channel of socket.io messages for one worker (``worker_name``)."""
    return f"{SIO_WORKER_PREFIX}{worker}:{name}"


def event_channel(event: str) -> str:
    """The channel of the named event ``event`` (gunicorn_barrel.events)."""
    if not isinstance(event, str) or not event:
        raise ValueError("event names are non-empty strings")
    return EVENT_PREFIX + event


def check_user_channel(channel: str) -> None:
    """Raise ValueError for a channel that only the bus itself may use."""
    if channel.startswith(RESERVED_PREFIX):
        raise ValueError("channels starting with NUL are reserved for the bus")


def is_reserved(topic: bytes) -> bool:
    """Whether a frame's topic names one of the bus's own channels."""
    return bytes(topic[:1]) == RESERVED_PREFIX.encode()


def crosses_hosts(topic: bytes) -> bool:
    """Whether frames of this topic travel on federation links."""
    return bytes(topic).startswith(_CROSSING_HOSTS)


def redis_prefix(namespace: str) -> bytes:
    """What every Redis channel of a Redis bus namespace starts with."""
    return f"{REDIS_PREFIX}{namespace}:".encode()


# -- the socket.io messages ----------------------------------------------------------

def host_id(worker: str | None, unique: str) -> str:
    """A BarrelManager's host_id, ``<worker>|<unique>``: an ack goes back to that worker's channel."""
    return f"{worker or '-'}|{unique}"


def worker_of_host(host: object) -> str | None:
    """The worker named in a host_id (None: another sender's, or a manager made before fork)."""
    worker = host.partition("|")[0] if isinstance(host, str) else ""
    return worker if "." in worker else None


class _EmitFields(TypedDict):
    method: Literal["emit"]
    namespace: str
    room: Any  # a room, a sid, a list of them, or None: everyone
    skip_sid: Any
    callback: tuple[Any, str, int] | None  # (room, namespace, ack id)
    host_id: str


class EmitMessage(_EmitFields, total=False):
    """An emit: ``encoded`` (the packet as engine.io sends it), or ``event``/``data``/``binary``."""

    encoded: str
    event: str
    data: list[Any]
    binary: bool
    mid: str  # with connection state recovery: the emit's id, its offset (sio.recovery)


class DisconnectMessage(TypedDict):
    method: Literal["disconnect"]
    sid: str
    namespace: str
    host_id: str


class RoomMessage(TypedDict):
    method: Literal["enter_room", "leave_room"]
    sid: str
    room: Any
    namespace: str
    host_id: str


class CloseRoomMessage(TypedDict):
    method: Literal["close_room"]
    room: Any
    namespace: str
    host_id: str


class CallbackMessage(TypedDict):
    """An ack, on its way back to the worker whose host_id it names."""

    method: Literal["callback"]
    host_id: str
    sid: str
    namespace: str
    id: int
    args: Any


SioMessage = EmitMessage | DisconnectMessage | RoomMessage | CloseRoomMessage | CallbackMessage


def emit_message(host: str, event: str, args: list[Any], namespace: str, room: Any = None,
                 skip_sid: Any = None, callback: tuple[Any, str, int] | None = None,
                 encoded: str | None = None) -> EmitMessage:
    """An emit of ``event`` with ``args``; with ``encoded``, the receivers only write that out."""
    message: EmitMessage = {
        "method": "emit", "namespace": namespace, "room": room, "skip_sid": skip_sid,
        "callback": callback, "host_id": host,
    }
    if encoded is not None:
        message["encoded"] = encoded
    else:
        # Bytes stay bytes inside the list (msgpack): no base64, so binary=False.
        message["event"], message["data"], message["binary"] = event, args, False
    return message


class EventMessage(TypedDict):
    """A named event (gunicorn_barrel.events)."""

    data: Any


def event_message(data: Any) -> EventMessage:
    return {"data": data}


# -- the cluster's messages (gunicorn_barrel.cluster), on the socket.io channels ----------

PRESENCE_METHODS = frozenset({"hello", "heartbeat", "bye"})
CLUSTER_METHODS = PRESENCE_METHODS | {"request", "response"}


class PresenceMessage(TypedDict):
    """A manager saying it is there (``hello`` when it starts, then ``heartbeat``) or leaving."""

    method: Literal["hello", "heartbeat", "bye"]
    host_id: str


class RequestMessage(TypedDict):
    """A question to every other manager; each answers with ResponseMessages to ``host_id``."""

    method: Literal["request"]
    host_id: str
    id: str
    kind: str
    namespace: str
    params: dict[str, Any]


class ResponseMessage(TypedDict):
    """Part of one manager's answer (``more``: parts follow) to the request ``id`` of ``to``."""

    method: Literal["response"]
    host_id: str
    to: str
    id: str
    values: list[Any]
    more: bool
    error: NotRequired[str]  # the answering worker failed: no values, counted as missing


def presence_message(method: Literal["hello", "heartbeat", "bye"], host: str) -> PresenceMessage:
    return {"method": method, "host_id": host}


def request_message(host: str, request_id: str, kind: str, namespace: str,
                    params: dict[str, Any]) -> RequestMessage:
    return {"method": "request", "host_id": host, "id": request_id, "kind": kind,
            "namespace": namespace, "params": params}


def response_message(host: str, to: str, request_id: str, values: list[Any],
                     more: bool) -> ResponseMessage:
    return {"method": "response", "host_id": host, "to": to, "id": request_id,
            "values": values, "more": more}


# -- the bus's own messages ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Nack:
    """A Redis bus receiver asks sender ``origin`` for frames first..last of ``channel`` again."""

    origin: bytes
    channel: str
    first: int
    last: int

    def payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Nack | None:
        """The request in ``payload``, or None if it is not a well-formed one."""
        origin, channel = payload.get("origin"), payload.get("channel")
        first, last = payload.get("first"), payload.get("last")
        if not (isinstance(origin, bytes) and isinstance(channel, str) and isinstance(first, int)
                and isinstance(last, int) and 0 < first <= last < 2**64):
            return None
        return cls(origin, channel, first, last)


def heartbeat_payload(published: Mapping[tuple[bytes, bytes], int],
                      counters: Mapping[str, int] | None = None,
                      tops: Mapping[tuple[bytes, bytes], int] | None = None,
                      echo: int | None = None) -> dict[str, Any]:
    """The broadcaster's heartbeat: per (origin, topic) the seq up to which it published all
    (``acks``), and the highest it published where that is more (``tops``).

    Its senders take ``acks`` as their acknowledgements; its receivers learn from
    both which missing frames will never come to them (``sequencing``). Streams
    from federation links are in it too. With ``echo`` (a number), each worker
    pushes back ``echo_parts`` once it read the heartbeat.
    """
    def named(streams: Mapping[tuple[bytes, bytes], int]) -> dict[str, int]:
        return {origin.hex() + "/" + topic.decode("utf-8", "replace"): seq
                for (origin, topic), seq in streams.items()}

    payload: dict[str, Any] = {"acks": named(published), "tops": named(tops or {})}
    if counters is not None:
        payload["counters"] = dict(counters)
    if echo is not None:
        payload["echo"] = echo
    return payload


def echo_parts(payload: Mapping[str, Any], pid: int) -> list[bytes] | None:
    """What a worker pushes back for a heartbeat that asks for an echo (None: it does not)."""
    number = payload.get("echo")
    if not isinstance(number, int) or not 0 < number < 2**64:
        return None
    return [ECHO_TOPIC, _ECHO.pack(pid, number)]


def decode_echo(parts: Sequence[bytes]) -> tuple[int, int] | None:
    """(pid, heartbeat number) of a pushed echo; None if it is not one."""
    if len(parts) != 2 or parts[0] != ECHO_TOPIC or len(parts[1]) != _ECHO.size:
        return None
    pid, number = _ECHO.unpack(parts[1])
    return pid, number


def published_up_to(payload: Mapping[str, Any], stream: tuple[bytes, str]) -> tuple[int, int] | None:
    """(the seq up to which a heartbeat's broadcaster published all of ``stream`` (origin,
    channel), the highest it published), or None if it names no such stream."""
    key = stream[0].hex() + "/" + stream[1]
    acks, tops = payload.get("acks"), payload.get("tops")
    seq = acks.get(key) if isinstance(acks, dict) else None
    if not isinstance(seq, int):
        return None
    top = tops.get(key, seq) if isinstance(tops, dict) else seq
    return seq, top if isinstance(top, int) else seq


def acks_for(origin: bytes, payload: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """(channel, seq) acknowledged to sender ``origin`` in a heartbeat's payload."""
    acks = payload.get("acks")
    if not isinstance(acks, dict):
        return
    mine = origin.hex() + "/"
    for key, seq in acks.items():
        if isinstance(key, str) and key.startswith(mine) and isinstance(seq, int):
            yield key[len(mine):], seq
