"""Load generator: polling-only socket.io sessions against one loopback server.

    python -m bench.polling_load --port 8000 --concurrency 50 --warmup 2 --duration 10

One session ("client served") is: GET handshake -> POST "40" (socket.io
CONNECT) -> GET (a payload starting with "40") -> POST "1" (engine.io CLOSE).
Each greenlet runs sessions back to back until the window closes. Sessions and
request latencies are counted when they end inside the measured window (after
the warm-up); errors are counted over the whole run. Prints one JSON object.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402

from bench import CONNECTION_MODES  # noqa: E402
from bench.stats import summarize  # noqa: E402

PATH = "/socket.io/?EIO=4&transport=polling"
REQUEST_TIMEOUT = 10.0
MAX_ERROR_SAMPLES = 10


class BadAnswer(Exception):
    """A non-200 status or an unexpected payload."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Run:
    """Counters shared by the greenlets of one run."""

    def __init__(self, port: int, mode: str, warmup: float, duration: float) -> None:
        self.port = port
        self.mode = mode
        self.start = time.monotonic()
        self.window_start = self.start + warmup
        self.window_end = self.window_start + duration
        self.latencies_ns: list[int] = []
        self.sessions_in_window = 0
        self.sessions_total = 0
        self.requests_total = 0
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []

    def in_window(self) -> bool:
        return self.window_start <= time.monotonic() < self.window_end

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{kind}: {detail}"[:300])


class Client:
    """One simulated socket.io client: a greenlet running sessions in a loop."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=REQUEST_TIMEOUT)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, url: str, body: bytes | None = None) -> bytes:
        conn = self._connection()
        t0 = time.perf_counter_ns()
        conn.request(method, url, body=body)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter_ns() - t0
        self.run.requests_total += 1
        if self.run.in_window():
            self.run.latencies_ns.append(elapsed)
        if self.run.mode == "per-request":
            self.close()
        if response.status != 200:
            raise BadAnswer("non_200", f"{method} {url} -> {response.status} {data[:100]!r}")
        return data

    def session(self) -> None:
        answer = self.request("GET", PATH)
        if not answer.startswith(b"0{"):
            raise BadAnswer("bad_payload", f"handshake answered {answer[:100]!r}")
        url = f"{PATH}&sid={json.loads(answer[1:])['sid']}"
        if self.request("POST", url, b"40") != b"OK":
            raise BadAnswer("bad_payload", "POST 40 not answered OK")
        answer = self.request("GET", url)
        if not answer.startswith(b"40"):
            raise BadAnswer("bad_payload", f"GET after CONNECT answered {answer[:100]!r}")
        if self.request("POST", url, b"1") != b"OK":
            raise BadAnswer("bad_payload", "POST 1 not answered OK")

    def loop(self) -> None:
        run = self.run
        while time.monotonic() < run.window_end:
            try:
                self.session()
            except BadAnswer as exc:
                run.error(exc.kind, str(exc))
                self.close()
            except Exception as exc:  # counted: resets, timeouts, refused connections
                run.error("exception", repr(exc))
                self.close()
                gevent.sleep(0.05)
            else:
                run.sessions_total += 1
                if run.in_window():
                    run.sessions_in_window += 1
                if run.mode == "per-session":
                    self.close()
        self.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connection", choices=CONNECTION_MODES, default="keepalive")
    args = parser.parse_args(argv)

    run = Run(args.port, args.connection, args.warmup, args.duration)
    cpu0 = os.times()
    clients = [Client(run) for _ in range(args.concurrency)]
    greenlets = [gevent.spawn(c.loop) for c in clients]
    # Greenlets stop starting sessions at the window's end; a session in
    # flight then ends within its request timeouts, or is killed here.
    gevent.joinall(greenlets, timeout=args.warmup + args.duration + 4 * REQUEST_TIMEOUT)
    unfinished = sum(not g.dead for g in greenlets)
    gevent.killall(greenlets, timeout=2)
    cpu1 = os.times()
    wall = time.monotonic() - run.start

    print(json.dumps({
        "connection": args.connection,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "sessions": run.sessions_in_window,
        "sessions_per_s": run.sessions_in_window / args.duration,
        "sessions_total": run.sessions_total,
        "requests_total": run.requests_total,
        "latency_ms": summarize(run.latencies_ns, 1e6),
        "errors": sum(run.errors.values()),
        "errors_by_kind": dict(run.errors),
        "error_samples": run.error_samples,
        "unfinished_greenlets": unfinished,
        "wall_s": wall,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }))


if __name__ == "__main__":
    main()
