"""A URL shortener whose links have a live visit map, served by several gunicorn workers.

From the repository root::

    npm ci                  # once: socket.io-client, leaflet, world-atlas, the GeoLite2 databases
    gunicorn -c example_confs/barrel_conf.py -w 4 -b 127.0.0.1:8000 demos.shortener.app:wsgi

then open http://127.0.0.1:8000/, shorten a URL and open its map page: every
visit of the short URL, whichever worker serves it, appears on the map of
everyone watching it, whichever worker holds their socket.

HTTP:
    GET  /                 the form
    POST /api/shorten      {"url": "https://..."} (JSON, or a form field) ->
                           201 {"code", "url", "short_url", "monitor_url"}; 400 {"error"} for a
                           URL that is not http(s) with a host or is over 2048 characters
    GET  /<code>           302 to the URL, and the visit is recorded (HEAD: the redirect only);
                           404 for an unknown code, 400 for a malformed one (codes: 7 base62 chars)
    GET  /m/<code>         the map page (?transport=polling or ?transport=websocket to force one)
    GET  /api/links/<code> {"code", "url", "created", "visits", "live_events", "dropped", "recent"}
Every response of the app carries ``X-Worker-Pid``, the pid of the worker that served it.

socket.io events:
    watch  {"code"} (client -> server, acked)  watch that code's visits (one code per socket):
           the ack is the /api/links state plus {"ok": true, "pid"}, or {"ok": false, "error"}
    hello  {"pid", "sid"}                       sent on connect
    visit  {"code", "seq", "time", "lat", "lon", "country", "city", "visits", "pid"}
           a visit, live: at most 20 per second per code (visits.LIVE_EVENTS_PER_SECOND)
    count  {"code", "visits", "live_events", "dropped"}  after a second in which visits
           were over that limit: they are counted, not drawn

Visitor addresses: X-Forwarded-For is used only when the TCP peer is a trusted
proxy, listed in the environment variable DEMO_TRUSTED_PROXIES (default
"127.0.0.1,::1"; see clientip.py). Set DEMO_PUBLIC_URL (e.g. https://sho.rt)
to build short URLs from it rather than from the request's Host header.
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import socketio

from demos.shortener import urls
from demos.shortener.clientip import TrustedProxies
from demos.shortener.geo import Locator
from demos.shortener.visits import VisitRecorder, link_state, room, short_key
from gunicorn_barrel import BarrelManager
from gunicorn_barrel.store import StoreError, get_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATIC = HERE / "static"
NODE_MODULES = REPO / "node_modules"

log = logging.getLogger("demos.shortener")

MAX_BODY = 16 * 1024
_NEW_CODE_ATTEMPTS = 5
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")

# path -> (file, content type). Pages and scripts of the demo, then browser
# packages served straight from node_modules/ (installed by `npm ci`).
_JS, _CSS, _JSON = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "application/json"
ASSETS: dict[str, tuple[Path, str]] = {
    "/shorten.js": (STATIC / "shorten.js", _JS),
    "/monitor.js": (STATIC / "monitor.js", _JS),
    "/topojson.js": (STATIC / "topojson.js", _JS),
    "/style.css": (STATIC / "style.css", _CSS),
}
VENDOR: dict[str, tuple[Path, str]] = {
    "/vendor/socket.io.min.js": (NODE_MODULES / "socket.io-client" / "dist" / "socket.io.min.js", _JS),
    "/vendor/leaflet/leaflet.js": (NODE_MODULES / "leaflet" / "dist" / "leaflet.js", _JS),
    "/vendor/leaflet/leaflet.css": (NODE_MODULES / "leaflet" / "dist" / "leaflet.css", _CSS),
    "/vendor/world-atlas/countries-110m.json": (NODE_MODULES / "world-atlas" / "countries-110m.json", _JSON),
}
INDEX_HTML = STATIC / "index.html"
MONITOR_HTML = STATIC / "monitor.html"

TRUSTED_PROXIES = TrustedProxies.from_environ()
PUBLIC_URL = os.environ.get("DEMO_PUBLIC_URL", "").rstrip("/")

sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())
recorder = VisitRecorder(sio, TRUSTED_PROXIES, Locator())


# -- socket.io ----------------------------------------------------------------


@sio.event
def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    sio.save_session(sid, {"code": None})
    sio.emit("hello", {"pid": os.getpid(), "sid": sid}, to=sid)


@sio.event
def whoami(sid: str, _data: Any = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.event
def watch(sid: str, data: Any = None) -> dict[str, Any]:
    code = data.get("code") if isinstance(data, dict) else None
    if not isinstance(code, str) or not urls.is_code(code):
        return {"ok": False, "error": f"code: {urls.CODE_LENGTH} letters or digits"}
    store = get_store()
    try:
        if store.get(short_key(code)) is None:
            return {"ok": False, "error": f"no short link {code}"}
        with sio.session(sid) as session:
            if session.get("code") not in (None, code):
                sio.leave_room(sid, room(session["code"]))
            # Enter the room before reading the state: a visit is then either in
            # the state, or sent to us afterwards (or both: the page drops repeats by seq).
            sio.enter_room(sid, room(code))
            session["code"] = code
        state = link_state(store, code)
    except StoreError as exc:
        return {"ok": False, "error": f"store unavailable: {exc}"}
    if state is None:
        return {"ok": False, "error": f"no short link {code}"}
    return {"ok": True, "pid": os.getpid(), **state}


# -- HTTP ---------------------------------------------------------------------

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]


class Response:
    def __init__(
        self, status: str, body: bytes | str, content_type: str, headers: Headers | None = None
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = [("Content-Type", content_type), *(headers or [])]


def json_response(status: str, data: Any, headers: Headers | None = None) -> Response:
    return Response(status, json.dumps(data), "application/json", headers)


def json_error(status: str, message: str, headers: Headers | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def text_response(status: str, body: str) -> Response:
    return Response(status, body, "text/plain; charset=utf-8")


def html_page(status: str, title: str, message: str) -> Response:
    page = (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
        "<link rel=\"stylesheet\" href=\"/style.css\"></head>"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        "<p><a href=\"/\">Shorten a URL</a></p></main></body></html>\n"
    )
    return Response(status, page, "text/html; charset=utf-8")


def method_not_allowed(allowed: str) -> Response:
    return json_error("405 Method Not Allowed", f"use {allowed}", [("Allow", allowed)])


def file_response(path: Path, content_type: str) -> Response:
    try:
        data = path.read_bytes()
    except OSError:
        if NODE_MODULES in path.parents:
            # a browser package from npm that is not installed
            return text_response("404 Not Found", f"{path.relative_to(REPO)} is missing: run `npm ci` "
                                                  f"in {REPO}.\n")
        return text_response("404 Not Found", "Not Found\n")
    return Response("200 OK", data, content_type, [("Cache-Control", "no-cache")])


def base_url(environ: dict[str, Any]) -> str:
    if PUBLIC_URL:
        return PUBLIC_URL
    scheme = "https" if environ.get("wsgi.url_scheme") == "https" else "http"
    host = environ.get("HTTP_HOST", "")
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    return f"{scheme}://{host}"


def read_body(environ: dict[str, Any]) -> bytes | Response:
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            return json_error("400 Bad Request", "bad Content-Length")
        if length > MAX_BODY:
            return json_error("413 Content Too Large", f"the body is over {MAX_BODY} bytes")
    data: bytes = environ["wsgi.input"].read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        return json_error("413 Content Too Large", f"the body is over {MAX_BODY} bytes")
    return data


def requested_url(environ: dict[str, Any]) -> object | Response:
    """The ``url`` field of a JSON or form body, or an error response."""
    body = read_body(environ)
    if isinstance(body, Response):
        return body
    content_type = str(environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        try:
            values = parse_qs(body.decode("utf-8"), strict_parsing=False).get("url")
        except UnicodeDecodeError:
            return json_error("400 Bad Request", "the form is not UTF-8")
        return values[0] if values else None
    if content_type not in ("", "application/json"):
        return json_error("415 Unsupported Media Type", 'send JSON: {"url": "https://..."}')
    try:
        data = json.loads(body)
    except ValueError:
        return json_error("400 Bad Request", 'the body is not JSON: send {"url": "https://..."}')
    if not isinstance(data, dict) or "url" not in data:
        return json_error("400 Bad Request", 'send a JSON object: {"url": "https://..."}')
    url: object = data["url"]
    return url


def shorten(environ: dict[str, Any]) -> Response:
    value = requested_url(environ)
    if isinstance(value, Response):
        return value
    try:
        url = urls.normalize_url(value)
    except urls.InvalidURL as exc:
        return json_error("400 Bad Request", str(exc))
    store = get_store()
    for _ in range(_NEW_CODE_ATTEMPTS):
        code = urls.new_code()
        if store.compare_and_set(short_key(code), None, {"url": url, "created": round(time.time(), 3)}):
            base = base_url(environ)
            return json_response("201 Created", {
                "code": code, "url": url, "short_url": f"{base}/{code}", "monitor_url": f"{base}/m/{code}",
            })
    return json_error("503 Service Unavailable", "no free code found, try again")


def redirect(code: str, environ: dict[str, Any], record: bool) -> Response:
    link = get_store().get(short_key(code))
    if not isinstance(link, dict) or not isinstance(link.get("url"), str):
        return html_page("404 Not Found", "Unknown short link", f"There is no short link {code}.")
    url: str = link["url"]
    if record:
        try:
            recorder.record(code, environ)
        except StoreError as exc:  # the redirect still works
            log.warning("visit of %s not recorded: %s", code, exc)
    page = f'<!doctype html><title>Redirecting</title><a href="{html.escape(url)}">{html.escape(url)}</a>\n'
    return Response("302 Found", page, "text/html; charset=utf-8",
                    [("Location", url), ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")])


def malformed_code(code: str) -> str:
    return (f"{code[:40]!r} is not a short link code: codes are {urls.CODE_LENGTH} letters or digits.")


def route(environ: dict[str, Any]) -> Response:
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    read_only = method in ("GET", "HEAD")
    if path == "/ready-check":
        return text_response("200 OK", "ready\n")
    if path == "/api/shorten":
        return shorten(environ) if method == "POST" else method_not_allowed("POST")
    if path == "/" or path in ASSETS or path in VENDOR:
        if not read_only:
            return method_not_allowed("GET, HEAD")
        if path == "/":
            return file_response(INDEX_HTML, "text/html; charset=utf-8")
        return file_response(*(ASSETS.get(path) or VENDOR[path]))
    parts = path[1:].split("/")
    if len(parts) == 3 and parts[:2] == ["api", "links"]:
        if not read_only:
            return method_not_allowed("GET, HEAD")
        if not urls.is_code(parts[2]):
            return json_error("400 Bad Request", malformed_code(parts[2]))
        state = link_state(get_store(), parts[2])
        if state is None:
            return json_error("404 Not Found", f"no short link {parts[2]}")
        return json_response("200 OK", {"code": parts[2], **state})
    if len(parts) == 2 and parts[0] == "m":
        if not read_only:
            return method_not_allowed("GET, HEAD")
        if not urls.is_code(parts[1]):
            return html_page("400 Bad Request", "Malformed short link", malformed_code(parts[1]))
        if get_store().get(short_key(parts[1])) is None:
            return html_page("404 Not Found", "Unknown short link", f"There is no short link {parts[1]}.")
        return file_response(MONITOR_HTML, "text/html; charset=utf-8")
    if len(parts) == 1 and "." not in parts[0]:  # files (favicon.ico, robots.txt) are 404s
        if not read_only:
            return method_not_allowed("GET, HEAD")
        if not urls.is_code(parts[0]):
            return html_page("400 Bad Request", "Malformed short link", malformed_code(parts[0]))
        return redirect(parts[0], environ, record=method == "GET")
    return html_page("404 Not Found", "Not Found", f"Nothing here at {path[:200]}.")


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Every route of the demo but socket.io's."""
    try:
        response = route(environ)
    except StoreError as exc:
        log.warning("store error on %s: %s", environ.get("PATH_INFO"), exc)
        if str(environ.get("PATH_INFO", "")).startswith("/api/"):
            response = json_error("503 Service Unavailable", f"store unavailable: {exc}")
        else:
            response = html_page("503 Service Unavailable", "Try again", "The link store did not answer.")
    headers = [*response.headers, ("Content-Length", str(len(response.body))),
               ("X-Worker-Pid", str(os.getpid()))]
    start_response(response.status, headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]


wsgi = socketio.WSGIApp(sio, app)
