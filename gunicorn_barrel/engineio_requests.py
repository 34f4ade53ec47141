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

Requests without ``EIO=`` in the query string pass through untouched.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]



def engineio_requests(app: WSGIApp, allow_deflate: bool, body_limit: Callable[[], int]) -> WSGIApp:
    """Wrap ``app`` with the deflate policy and the body checks; ``body_limit()`` gives engine.io's limit."""

    def barrel_engineio(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "EIO=" not in environ.get("QUERY_STRING", ""):
            return app(environ, start_response)
        if not allow_deflate:
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        limit = body_limit()
        if _is_chunked(environ):
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _too_large(start_response, limit)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        elif _content_length(environ) > limit:
            return _too_large(start_response, limit)
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


def _too_large(start_response: Callable[..., Any], limit: int) -> list[bytes]:
    start_response("400 BAD REQUEST", [("Content-Type", "text/plain")])
    return [f"request body over the limit of {limit} bytes".encode()]
