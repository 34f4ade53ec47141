"""Federated gunicorn instances and hubs for tests: keys per topology, explicit readiness, kills.

Readiness is read, not guessed: every broadcaster (a hub too) writes a status
file in its runtime directory (``gunicorn_barrel/bus/zeromq/status.py``): the
workers subscribed to it, and each federation link's state and queue. Tests
wait on it ("every worker subscribed, every link up, nothing queued") before
they act, instead of hoping links win a race.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from gunicorn_barrel.runtime import endpoints
from tests.harness import REPO, Client, Gunicorn, wait_for
from tests.node_clients import spread_node_clients

KEY_NAMES = ("a", "b", "c", "hub", "cron", "rogue")
# Each stream of the kill tests: numbered messages at RATE per second; the cut comes a
# quarter of the way, so the stream outlasts the broadcaster's restart and its links' return.
RATE = 100
COUNT = 400


def make_key_pairs(base: Path) -> Path:
    """One key pair per name of KEY_NAMES in base/NAME, made by the key helper (its CLI)."""
    for name in KEY_NAMES:
        done = subprocess.run([sys.executable, "-m", "gunicorn_barrel.federation.keys",
                               str(base / name), name], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        assert "copy" in done.stdout
    return base


def key_dirs(pairs: Path, base: Path, knows: Mapping[str, Iterable[str]],
             emitters: Mapping[str, Iterable[str]] | None = None) -> Path:
    """base/NAME for each name of ``knows``: its key pair, the public keys of the names it
    knows in peers/ (the peers it dials or expects), of its ``emitters`` in emitters/."""
    for name, known in knows.items():
        target = base / name
        (target / "peers").mkdir(parents=True)
        for suffix in (".key", ".key_secret"):
            shutil.copy(pairs / name / f"{name}{suffix}", target)
        for other in known:
            shutil.copy(pairs / other / f"{other}.key", target / "peers")
        for other in (emitters or {}).get(name, ()):
            (target / "emitters").mkdir(exist_ok=True)
            shutil.copy(pairs / other / f"{other}.key", target / "emitters")
    return base


class Hub:
    """A standalone hub (``gunicorn_barrel.federation.hub``) with a temporary directory of its own,
    where its runtime directory, and so its status file, can be found."""

    def __init__(self, keydir: Path, workdir: Path, listen: str = "", peers: str = "",
                 extra: Sequence[str] = ()) -> None:
        self.cmd = [sys.executable, "-m", "gunicorn_barrel.federation.hub", "--keys", str(keydir), *extra]
        self.cmd += ["--listen", listen] if listen else []
        self.cmd += ["--peers", peers] if peers else []
        self.listen = listen
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True)
        self.log_path = workdir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Hub:
        with open(self.log_path, "ab") as out:  # a restarted hub appends
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env={
                **os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmpdir)})
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any] | None:
        assert self.proc is not None
        for rdir in self.tmpdir.glob(f"{endpoints.PREFIX}{self.proc.pid}-*"):
            return endpoints.read_status(str(rdir))
        return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


Part = Gunicorn | Hub


def _status(part: Part) -> tuple[dict[str, Any] | None, str]:
    """The status of ``part``'s current broadcaster, or None and why not."""
    if isinstance(part, Hub):
        assert part.proc is not None
        if part.proc.poll() is not None:
            return None, f"hub exited ({part.proc.returncode})"
        return part.status(), ""
    pids = part.broadcaster_pids()
    if len(pids) != 1:
        return None, f"broadcasters {pids}"
    status = endpoints.read_status(part.runtime_dir())
    if status is None or status.get("pid") != pids[0]:
        return None, "no status from the current broadcaster yet"
    workers = set(part.worker_pids())
    if len(workers) != part.workers:
        return None, f"{len(workers)} of {part.workers} workers"
    unsubscribed = workers - set(status["workers"])
    if unsubscribed:
        return None, f"workers {sorted(unsubscribed)} not subscribed"
    return status, ""


def not_ready(part: Part, queues_empty: bool) -> str:
    """'' when every worker is subscribed and every link that takes frames is up (and, with
    ``queues_empty``, every frame acknowledged by its peer); else what is missing."""
    status, why = _status(part)
    if status is None:
        return why or "no status file"
    links = [link for link in status["links"] if link["wants_data"]]
    down = [link["name"] for link in links if not link["up"]]
    if down:
        return f"links down: {down}"
    queued = {link["name"]: link["queued"] for link in links if link["queued"]}
    if queues_empty and queued:
        return f"queued for {queued}"
    return ""


def wait_ready(parts: Sequence[Part], queues_empty: bool = False, timeout: float = 60.0) -> None:
    missing: dict[int, str] = {}

    def ready() -> bool:
        missing.clear()
        for index, part in enumerate(parts):
            why = not_ready(part, queues_empty)
            if why:
                missing[index] = why
        return not missing

    try:
        wait_for(ready, timeout, "readiness", interval=0.1)
    except AssertionError:
        raise AssertionError(f"not ready after {timeout} s: {missing} (index in {parts})") from None


def kill_broadcaster(server: Gunicorn) -> Callable[[], None]:
    def cut() -> None:
        old = server.broadcaster_pid()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: [p for p in server.broadcaster_pids() if p != old], 10, "the broadcaster restarted")

    return cut


def kill_hub(hub: Hub) -> Callable[[], None]:
    """SIGKILL the hub and start it again (nothing supervises a hub but the admin)."""
    def cut() -> None:
        hub.kill()
        hub.start()

    return cut


class Receivers:
    """socket.io-client (node) clients on every instance, on at least 2 workers each, in room
    "stream": node counts what each client gets of each numbered stream, in arrival order."""

    def __init__(self, servers: Sequence[Gunicorn], stack: ExitStack, tmp_path: Path, per_server: int = 4):
        self.js = []
        self.pids: list[int] = []  # the worker holding each receiver, in the order of streams()
        for i, server in enumerate(servers):
            js, clients = stack.enter_context(
                spread_node_clients(server, "websocket", per_server, tmp_path / f"node{i}.err"))
            print("stream receivers per worker:", server.url, dict(Counter(c["pid"] for c in clients)))
            assert js.ask("join_stream", "joined")
            self.js.append(js)
            self.pids.extend(c["pid"] for c in clients)

    def streams(self, tag: str) -> list[dict[str, Any]]:
        return [s.get(tag, {}) for js in self.js for s in js.ask("streams?", "streams")["streams"]]

    def streams_except(self, tag: str, pid: int) -> list[dict[str, Any]]:
        """streams(tag) of the receivers that worker ``pid`` does not hold."""
        return [s for s, holder in zip(self.streams(tag), self.pids, strict=True) if holder != pid]

    def counters(self) -> list[dict[str, Any]]:
        """bus_counters of each receiver's worker: {pid, counters, broadcaster}."""
        return [c for js in self.js for c in js.ask("counters?", "counters")["counters"]]


def stream_through(cut: Callable[[], None], senders: Sequence[Client], receivers: Receivers,
                   count: int = COUNT, rate: int = RATE) -> None:
    """Every sender streams ``count`` numbered messages at ``rate``/s; ``cut()`` runs a quarter of
    the way; every receiver gets every message of every sender once, in order."""
    tags = []
    for sender in senders:
        tag = f"{sender.pid}-{uuid.uuid4().hex[:6]}"
        assert sender.call("start_stream", {"tag": tag, "count": count, "rate": rate}) == "started"
        tags.append(tag)

    def progress() -> int:
        return min(s.get("count", 0) for tag in tags for s in receivers.streams(tag))

    wait_for(lambda: progress() >= count // 4, 30, "stream progress", interval=0.2)
    cut()
    try:
        wait_for(lambda: progress() >= count, 60, "every message at every receiver", interval=0.2)
    except AssertionError:
        raise AssertionError(f"after the cut: {[receivers.streams(t) for t in tags]}") from None
    complete = {"count": count, "last": count - 1, "outOfOrder": 0, "duplicates": 0}
    for tag in tags:
        for stats in receivers.streams(tag):
            assert {k: stats[k] for k in complete} == complete, (tag, stats)


def kill_each_in_turn(victims: Sequence[tuple[str, Callable[[], None]]], senders: Sequence[Client],
                      receivers: Receivers, parts: Sequence[Part]) -> None:
    """For each victim in turn: streams from every sender, the victim's broadcaster SIGKILLed
    on the way, every message at every receiver once and in order; then everything ready again
    (workers subscribed, links up, queues empty) before the next one."""
    for name, cut in victims:
        print("SIGKILL of", name)
        try:
            stream_through(cut, senders, receivers)
        except AssertionError as exc:
            raise AssertionError(f"broadcaster of {name} killed: {exc}") from None
        wait_ready(parts, queues_empty=True)


def no_gaps(receivers: Receivers, restarts_seen: int, servers: Sequence[Gunicorn]) -> None:
    """The receivers' workers counted no gap, and saw their broadcaster restart ``restarts_seen``
    times; their broadcasters dropped nothing from a federation queue; no worker of ``servers``
    logged a gap."""
    for server in servers:
        assert "bus gap:" not in server.log(), server.log_path
    for answer in {a["pid"]: a for a in receivers.counters()}.values():
        counters, broadcaster = answer["counters"], answer["broadcaster"]
        assert counters.get("gaps", 0) == 0 and counters.get("frames_lost", 0) == 0, answer
        assert counters.get("broadcaster_restarts_seen", 0) == restarts_seen, answer
        assert broadcaster.get("federation_frames_dropped", 0) == 0, answer
