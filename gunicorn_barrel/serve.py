"""Serving one HTTP request at a time with gunicorn's own parser and handler.

gunicorn's keepalive loop parses request after request from one buffered
reader; routing must look at each request before any of it is read, so the
barrel worker serves a connection one request at a time and peeks between
them. Requests a client pipelined behind the first (rare; engine.io clients
never do) are already in the reader's buffer: they are served here too.
"""
from __future__ import annotations

import time
from typing import Any

from gunicorn import http

# After a response, what is left of a request body is drained before the
# next request; a client that sent far more than the app read is cut off.
_DRAIN_SECONDS = 5.0
_DRAIN_MAX_BYTES = 64 * 1024


def serve_one_request(worker: Any, listener_name: Any, client: Any, addr: Any) -> bool:
    """Serve the next request on ``client``; True if the connection stays open."""
    parser = http.get_parser(worker.cfg, client, addr)
    req = None
    try:
        while True:
            with worker.timeout_ctx():
                req = next(parser)
            if not req:
                return False
            worker.handle_request(listener_name, req, client, addr)
            if req.should_close():
                return False
            if not parser.finish_body(time.monotonic() + _DRAIN_SECONDS, _DRAIN_MAX_BYTES):
                return False
            if not _has_buffered(parser):
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


def _has_buffered(parser: Any) -> bool:
    return bool(parser.unreader.buf.getbuffer().nbytes)
