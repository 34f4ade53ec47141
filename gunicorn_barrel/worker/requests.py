"""WSGI middleware the barrel worker puts in front of the app, for engine.io requests only.

- Deflate policy: simple-websocket accepts any permessage-deflate offer;
  hiding the offer is the one lever that does not depend on its internals.
- Oversized bodies: engine.io answers a POST over its max_http_buffer_size
  by closing the session and waiting for its queue to drain, which holds the
  request until the ping timeout (seen with python-engineio 4.15). We answer
  400 at once, read nothing of the body, and leave the session alone.
- Chunked request bodies: engine.io reads ``CONTENT_LENGTH`` bytes and would
  see an empty body (the packets silently lost); we read the chunked body,
  up to that same limit, and give engine.io a body of known length.
- Malformed polling payloads: engine.io 4.15 answers 200 to a body that is not
  UTF-8 (with a traceback), and hangs a POST carrying a packet type clients
  never send (it closes the session and waits for its queue to drain). We
  answer 400 to both before engine.io sees them.
- A POST for a session the client just closed: engine.io's KeyError("Session
  is disconnected") escapes as a 500; we answer 400, its normal answer for a
  session it does not know.

- Memory: the raw socket moves to ``environ['barrel.socket']`` (see engineio_lean).

Requests without ``EIO=`` in the query string pass through untouched.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn_barrel.compat.engineio_lean import hide_gunicorn_socket

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]



def engineio_requests(app: WSGIApp, allow_deflate: bool, body_limit: Callable[[], int]) -> WSGIApp:
    """Wrap ``app`` with the deflate policy and the body checks; ``body_limit()`` gives engine.io's limit."""

    def barrel_engineio(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "EIO=" not in environ.get("QUERY_STRING", ""):
            return app(environ, start_response)
        if not allow_deflate:
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        hide_gunicorn_socket(environ)
        limit = body_limit()
        if _is_chunked(environ):
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _too_large(start_response, limit)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        elif _content_length(environ) > limit:
            return _too_large(start_response, limit)
        if environ.get("REQUEST_METHOD") == "POST" and "EIO=4" in environ.get("QUERY_STRING", ""):
            body = environ["wsgi.input"].read(_content_length(environ))
            problem = payload_problem(body)
            if problem is not None:
                return _bad_request(start_response, problem)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            try:
                return app(environ, start_response)
            except KeyError:  # engine.io's "Session is disconnected"
                return _bad_request(start_response, "Invalid session")
        return app(environ, start_response)

    return barrel_engineio


def _is_chunked(environ: dict[str, Any]) -> bool:
    return (not environ.get("CONTENT_LENGTH")
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower())


def _content_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


# Packet types a client may send in an engine.io 4 polling payload: close,
# pong, message, and "b" for a base64 binary message. Not ping: in engine.io 4
# the server pings, and engine.io answers a client's PING by closing the
# session with wait=True, which holds the POST until a GET drains the queue.
_CLIENT_PACKET_TYPES = frozenset("134b")


def payload_problem(body: bytes) -> str | None:
    """What is wrong with an engine.io 4 polling POST body, or None if nothing."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "payload is not UTF-8"
    for packet in text.split("\x1e"):
        if not packet or packet[0] not in _CLIENT_PACKET_TYPES:
            return "payload has a packet clients do not send"
    return None


def _too_large(start_response: Callable[..., Any], limit: int) -> list[bytes]:
    return _bad_request(start_response, f"request body over the limit of {limit} bytes")


def _bad_request(start_response: Callable[..., Any], reason: str) -> list[bytes]:
    start_response("400 BAD REQUEST", [("Content-Type", "text/plain")])
    return [reason.encode()]
