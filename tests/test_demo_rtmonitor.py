"""The rtmonitor demo (demos/rtmonitor) under real gunicorn -w 4 with the example config.

Headless Chromium (playwright-core from node_modules, Debian's /usr/bin/chromium)
opens the page twice, over WebSocket and over long-polling
(tests/browser/rtmonitor.mjs): both get live points, draw and redraw the Flot
charts, and hold identical points for the seq numbers they share, all from one
sampler worker. python-socketio clients check that the sampler moves to
another worker when its worker dies, and that with --preload the arbiter
never samples. Screenshots go to test-artifacts/rtmonitor-{ws,polling}.png.

The browser test fails (never skips) when node, Chromium or the npm packages
are missing: CI must not pass without having looked at the page.
"""
from __future__ import annotations

import os
import re
import signal
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from demos.rtmonitor import app as rtm
from tests import browser_run
from tests.harness import REPO, Gunicorn, gunicorn, pid_alive, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4
APP = "demos.rtmonitor.app:wsgi"
ARTIFACTS = browser_run.ARTIFACTS
BROWSER_TIMEOUT = 90  # seconds the node script may take, all included
TOTAL_LABEL = "total (machine, right axis)"
SAMPLER_LINE = re.compile(r"\[(\d+)\] \[INFO\] rtmonitor: worker (\d+) is the sampler")


def _vendor_files() -> dict[Path, str]:
    return {filename: f"{filename}, served as {path} (npm package {package}: run `npm ci` in {REPO})"
            for path, (package, filename) in rtm.VENDOR.items()}


def browser_prerequisites() -> list[str]:
    """What the browser test needs and does not find (empty: all there)."""
    return browser_run.prerequisites(_vendor_files())


class SampleClient:
    """A python-socketio client that records the history and sample events it receives."""

    def __init__(self, url: str, transports: tuple[str, ...] = ("websocket",)) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.lock = threading.Lock()
        self.histories: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.sio.on("history", self._on_history)
        self.sio.on("sample", self._on_sample)
        self.sio.connect(url, transports=list(transports), wait_timeout=10)
        first = wait_for(lambda: self.got_histories(), 10, "history on connect")[0]
        self.pid: int = first["pid"]

    def _on_history(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.histories.append(data)

    def _on_sample(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.samples.append(data)

    def got_histories(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.histories)

    def got(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.samples)

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


def leader(srv: Gunicorn) -> dict[str, Any] | None:
    reply = requests.get(srv.url + "/api/leader", timeout=5)
    assert reply.status_code == 200, reply.text
    value: dict[str, Any] | None = reply.json()["leader"]
    return value


def leader_pid(srv: Gunicorn, timeout: float = 15) -> int:
    found = wait_for(lambda: leader(srv), timeout, f"a sampler elected (log: {srv.log_path})")
    return int(found["pid"])


def sampler_announcements(srv: Gunicorn) -> list[tuple[int, int]]:
    """(logging pid, elected pid) of each "is the sampler" line in the gunicorn log."""
    return [(int(a), int(b)) for a, b in SAMPLER_LINE.findall(srv.log())]


def run_browser(url: str) -> dict[str, Any]:
    """tests/browser/rtmonitor.mjs against ``url``: its JSON result, or an AssertionError saying why not."""
    return browser_run.run_script("rtmonitor", [url, str(ARTIFACTS), str(BROWSER_TIMEOUT), "5"],
                                  BROWSER_TIMEOUT, _vendor_files())


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    # These tests need one sampler throughout. With the default 3 s lease a
    # worker stalled that long on a busy machine hands it over (as designed,
    # see test_sampler_moves_to_another_worker_when_its_worker_dies): a lease
    # no stall outlasts makes "one sampler" a given here, not luck.
    with gunicorn(app=APP, workers=WORKERS, env={"RTMONITOR_LEADER_TTL": "60"}) as srv:
        yield srv


def test_browser_pages_over_websocket_and_polling_plot_the_same_points(server: Gunicorn) -> None:
    workers = set(server.worker_pids())
    sampler = leader_pid(server)
    result = run_browser(server.url)
    assert leader_pid(server) == sampler, "the sampler changed during the test"
    assert set(server.worker_pids()) == workers, "a worker was restarted during the test"

    expected_legend = [f"worker {pid}" for pid in sorted(workers)] + [TOTAL_LABEL]
    for name, transport in (("ws", "websocket"), ("polling", "polling")):
        page = result["pages"][name]
        state, charts = page["state"], page["charts"]
        assert state["transport"] == transport, (name, state)
        assert state["workerPid"] in workers, (name, state)
        assert state["received"] >= 5, (name, state)
        assert state["errors"] == [] and page["problems"] == [], (name, state["errors"], page["problems"])
        # the charts exist, are drawn, and are redrawn with newer points
        for chart in ("cpu", "mem"):
            canvas = charts["canvas"][chart]
            assert canvas is not None, f"{name}: no Flot canvas in #{chart}-chart"
            assert canvas["width"] > 300 and canvas["height"] > 150, (name, chart, canvas)
            assert canvas["inked"] > 2000, f"{name}: #{chart}-chart looks empty: {canvas}"
            assert charts[f"{chart}Redrawn"], f"{name}: #{chart}-chart did not change: {charts}"
            assert charts["legend"][chart] == expected_legend, (name, chart, charts["legend"])
        assert charts["after"]["lastPlottedSeq"] >= charts["before"]["lastPlottedSeq"] + 2, charts
        assert charts["after"]["draws"] > charts["before"]["draws"], charts
        assert page["points"]["samplers"] == [sampler], (name, page["points"])
        assert page["points"]["workerSets"] == [",".join(sorted(str(p) for p in workers))], page["points"]
        assert Path(result["screenshots"][name]).stat().st_size > 10_000, result["screenshots"]

    overlap = result["overlap"]
    assert overlap["count"] >= 5, overlap
    # Each page holds every seq: live, from its history, or filled after a hole.
    warnings = [line for line in server.log().splitlines()
                if "rtmonitor" in line and ("WARNING" in line or "ERROR" in line)]
    assert overlap["missing"] == {"ws": [], "polling": []}, (overlap["missing"], warnings[-10:])
    assert overlap["mismatchedCount"] == 0, overlap["mismatched"]
    assert overlap["samplers"] == [sampler]
    # One sampler: one point a second (two samplers would halve the interval).
    assert 0.8 <= statistics.median(overlap["intervals"]) <= 1.2, overlap["intervals"]

    last = overlap["lastPoint"]
    assert last["sampler"] == sampler
    assert 0 < last["total"]["mem"] <= last["total"]["mem_total"], last["total"]
    assert 0 <= last["total"]["cpu"] <= 100 and last["total"]["ncpu"] >= 1, last["total"]
    assert {int(pid) for pid in last["workers"]} == workers
    for stats in last["workers"].values():
        assert stats["mem"] > 0 and 0 <= stats["cpu"] <= 100, stats


def test_one_sampler_for_all_workers(server: Gunicorn) -> None:
    workers = set(server.worker_pids())
    sampler = leader_pid(server)
    assert sampler in workers
    # Every worker answers the same (each request on a new connection: any worker).
    answers = [requests.get(server.url + "/api/leader", timeout=5).json() for _ in range(20)]
    assert {a["leader"]["pid"] for a in answers} == {sampler}
    assert {a["served_by"] for a in answers} <= workers
    assert sampler_announcements(server) == [(sampler, sampler)]

    client = SampleClient(server.url, transports=("polling",))
    try:
        wait_for(lambda: len(client.got()) >= 4, 15, "4 samples")
        samples = client.got()
    finally:
        client.close()
    assert {s["sampler"] for s in samples} == {sampler}
    seqs = [s["seq"] for s in samples]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert all(s["total"]["mem"] > 0 for s in samples)
    # A new client gets the recent points at once, the same the live ones were.
    history = {p["seq"]: p for p in requests.get(server.url + "/api/history", timeout=5).json()["points"]}
    # A page that sees a hole asks for the kept points ("fill"): the same points, in order.
    asking = SampleClient(server.url)
    try:
        filled = asking.sio.call("fill", None, timeout=10)["points"]
    finally:
        asking.close()
    seqs_filled = [p["seq"] for p in filled]
    assert seqs_filled == list(range(seqs_filled[0], seqs_filled[0] + len(filled))), seqs_filled
    assert seqs_filled[-1] >= max(history)
    assert all(p == history[p["seq"]] for p in filled if p["seq"] in history)
    assert 1 <= len(history) <= rtm.HISTORY
    for s in samples:
        if s["seq"] in history:
            assert history[s["seq"]] == s


def test_page_scripts_and_browser_packages_are_served(server: Gunicorn) -> None:
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for src in [*rtm.VENDOR, "/rtmonitor.js"]:
        assert f'<script src="{src}"></script>' in page.text
    script = requests.get(server.url + "/rtmonitor.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    for path, (package, filename) in rtm.VENDOR.items():
        if not filename.is_file():
            pytest.fail(f"{filename} missing: run `npm ci` in {REPO} (npm package {package})", pytrace=False)
        reply = requests.get(server.url + path, timeout=10)
        assert reply.status_code == 200 and "javascript" in reply.headers["Content-Type"], path
        assert reply.content == filename.read_bytes(), path
    assert requests.get(server.url + "/no-such-page", timeout=10).status_code == 404


def test_missing_node_modules_answers_404_saying_npm_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In-process: the demo's WSGI app with the flot file pointed somewhere empty (nothing starts)."""
    path = "/vendor/jquery.flot.js"
    missing = tmp_path / "node_modules" / "flot" / "dist" / "es5" / "jquery.flot.js"
    monkeypatch.setitem(rtm.app.static_files, path, dict(rtm.app.static_files[path], filename=str(missing)))
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]]) -> None:
        status.append(s)

    body = b"".join(rtm.wsgi({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    assert status == ["404 Not Found"]
    assert b"npm ci" in body and b"flot" in body
    assert rtm.sampler.pid is None, "the sampler must not start outside a barrel worker"


def test_sampler_moves_to_another_worker_when_its_worker_dies() -> None:
    with gunicorn(app=APP, workers=WORKERS) as srv:
        old = leader_pid(srv)
        # A client held by another worker, so that it stays connected.
        clients = []
        try:
            while True:
                clients.append(SampleClient(srv.url))
                if clients[-1].pid != old:
                    break
                assert len(clients) < 40, "no client landed on a worker other than the sampler's"
            client = clients[-1]
            wait_for(lambda: any(s["sampler"] == old for s in client.got()), 10, "a sample from the sampler")
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: not pid_alive(old), 10, "the sampler's worker dead")
            new = wait_for(lambda: next((s for s in client.got() if s["sampler"] != old), None),
                           rtm.LEADER_TTL + 8, "a sample from another worker")
            wait_for(lambda: len([s for s in client.got() if s["sampler"] == new["sampler"]]) >= 3, 10,
                     "3 samples from the new sampler")
            samples = client.got()
        finally:
            for c in clients:
                c.close()
        assert new["sampler"] != old and pid_alive(new["sampler"])
        assert new["sampler"] in srv.worker_pids()
        assert leader_pid(srv) == new["sampler"]
        # the old sampler's points, then only the new one's; numbers go on increasing
        samplers = [s["sampler"] for s in samples]
        assert samplers == sorted(samplers, key=lambda p: p != old), samplers
        assert set(samplers) == {old, new["sampler"]}, samplers
        seqs = [s["seq"] for s in samples]
        assert seqs == sorted(set(seqs)), seqs
        last_old = max(s["t"] for s in samples if s["sampler"] == old)
        assert new["t"] - last_old <= rtm.LEADER_TTL + 3, (last_old, new["t"])
        assert new["workers"] and str(old) not in new["workers"]


def test_with_preload_the_arbiter_never_samples() -> None:
    with gunicorn(app=APP, workers=2, extra_args=("--preload",)) as srv:
        workers = set(srv.worker_pids())
        client = SampleClient(srv.url)  # a request: that worker starts its loop
        try:
            wait_for(lambda: len(client.got()) >= 3, 15, "3 samples")
            samples = client.got()
        finally:
            client.close()
        assert {s["sampler"] for s in samples} <= workers
        assert srv.pid not in {s["sampler"] for s in samples}
        assert leader_pid(srv) in workers
        announcements = sampler_announcements(srv)
        assert announcements and all(pid in workers for _, pid in announcements), announcements
        assert {int(pid) for pid in samples[-1]["workers"]} == workers
