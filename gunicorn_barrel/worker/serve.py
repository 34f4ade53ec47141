"""Serving one HTTP request at a time with gunicorn's own parser and handler.

gunicorn's keepalive loop parses request after request from one buffered
reader; routing must look at each request before any of it is read, so the
barrel worker serves a connection one request at a time and peeks between
them. Requests a client pipelined behind the first (rare; engine.io clients
never do) are already in the reader's buffer: they are served here too.
What of gunicorn's parser and worker this relies on is checked at worker
start (``compat.gunicorn_api``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from gunicorn import http

from gunicorn_barrel.compat.gunicorn_api import has_buffered_bytes

# After a response, what is left of a request body is drained before the
# next request; a client that sent far more than the app read is cut off.
_DRAIN_SECONDS = 5.0
_DRAIN_MAX_BYTES = 64 * 1024


@dataclasses.dataclass
class Connection:
    """What a client connection carries from one request to the next, handoffs included.

    gunicorn's keepalive loop parses every request of a connection with one
    parser: only its first request may start with a PROXY header, and the
    later ones inherit that header's addresses. We make a parser per
    request, so we keep both here.
    """

    served: int = 0  # requests of this connection parsed so far
    proxy_info: dict[str, Any] | None = None  # the first request's PROXY header


def serve_one_request(worker: Any, listener_name: Any, client: Any, addr: Any, conn: Connection) -> bool:
    """Serve the next request on ``client``; True if the connection stays open."""
    parser = http.get_parser(worker.cfg, client, addr)
    parser.req_count = conn.served  # gunicorn reads a PROXY header in request number 1 only
    req = None
    try:
        while True:
            with worker.timeout_ctx():
                req = next(parser)
            if not req:
                return False
            conn.served += 1
            if conn.served == 1:
                conn.proxy_info = req.proxy_protocol_info
            else:
                req.proxy_protocol_info = conn.proxy_info
            worker.handle_request(listener_name, req, client, addr)
            if req.should_close():
                return False
            if not parser.finish_body(time.monotonic() + _DRAIN_SECONDS, _DRAIN_MAX_BYTES):
                return False
            if not has_buffered_bytes(parser):
                return True
    except http.errors.NoMoreData:
        return False
    except StopIteration:
        return False
    except OSError:
        raise
    except Exception as exc:
        worker.handle_error(req, client, addr, exc)
        return False

