"""The parts of gunicorn's worker and HTTP parser the barrel worker builds on (checked, not patched).

``worker.serve`` serves a connection one request at a time with gunicorn's
own parser and handler, so that routing can peek between requests; it needs
the parser's ``finish_body`` and its read buffer, and the gevent worker's
request handling methods. ``BarrelWorker.handle`` asks gunicorn's HTTP/2
negotiation whether a connection speaks HTTP/2 with prior knowledge.
"""
from __future__ import annotations

import socket
from typing import Any

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.versions import IncompatibleLibrary

GUNICORN = "gunicorn"


def check() -> None:
    """The worker methods, the parser factory and a fresh parser's buffer."""
    from gunicorn import http
    from gunicorn.config import Config
    from gunicorn.http import errors
    from gunicorn.http2 import negotiation
    from gunicorn.workers.ggevent import GeventWorker

    for name, params in (("handle", ("self", "listener", "client", "addr")),
                         ("handle_request", ("self", "listener_name", "req", "sock", "addr")),
                         ("handle_error", ("self", "req", "client", "addr", "exc")),
                         ("timeout_ctx", ("self",)),
                         ("patch", ("self",))):
        shapes.accepts(GUNICORN, GeventWorker, name, f"gunicorn.workers.ggevent.GeventWorker.{name}", params)
    shapes.accepts(GUNICORN, negotiation, "prior_knowledge_allowed",
                   "gunicorn.http2.negotiation.prior_knowledge_allowed", ("cfg", "peer_addr"))
    shapes.accepts(GUNICORN, http, "get_parser", "gunicorn.http.get_parser", ("cfg", "source", "source_addr"))
    shapes.attribute(GUNICORN, errors, "NoMoreData", "gunicorn.http.errors.NoMoreData")
    shapes.attribute(GUNICORN, http.Request, "should_close", "gunicorn.http.Request.should_close")
    left, right = socket.socketpair()
    try:
        parser = http.get_parser(Config(), left, None)
        shapes.accepts(GUNICORN, parser, "finish_body", "gunicorn's parser.finish_body",
                       ("deadline", "max_bytes"))
        buf = getattr(getattr(parser, "unreader", None), "buf", None)
        if not hasattr(buf, "getbuffer"):
            raise IncompatibleLibrary(GUNICORN, "gunicorn's parser.unreader.buf is no longer a BytesIO")
    finally:
        left.close()
        right.close()


def has_buffered_bytes(parser: Any) -> bool:
    """Whether gunicorn's parser already read bytes of a next request (pipelined behind this one)."""
    return bool(parser.unreader.buf.getbuffer().nbytes)
