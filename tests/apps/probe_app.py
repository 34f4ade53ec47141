"""tests/apps/sio_app.py plus probes for the edge cases of issue 13.

- ``burst_item``/``burst_seen``: what a client emitted, in the order each
  worker handled it (tests/test_polling_burst.py);
- ``store_incr_logged``: incrs whose answers are all reported, errors
  included (tests/test_store_restart.py);
- ``/addr``: the REMOTE_ADDR gunicorn gave the request, and the worker pid
  (tests/test_connection_settings.py, tests/test_handoff_security.py).
"""
import os
import time

import gevent
import socketio

import gunicorn_barrel
from tests.apps.sio_app import plain_wsgi, sio

_bursts: dict[str, list[int]] = {}


@sio.event
def burst_item(sid, n):
    _bursts.setdefault(sid, []).append(n)


@sio.event
def burst_seen(sid, _data=None):
    return {"pid": os.getpid(), "seen": _bursts.get(sid, [])}


@sio.event
def store_incr_logged(sid, data):
    """incr data["key"] data["times"] times from 10 greenlets; every answer and error, in call order."""
    from gunicorn_barrel.store import StoreError, get_store

    store = get_store()
    per = data["times"] // 10

    def run():
        answers, errors, longest = [], [], 0.0
        for _ in range(per):
            start = time.monotonic()
            try:
                answers.append(store.incr(data["key"]))
            except StoreError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            longest = max(longest, time.monotonic() - start)
        return answers, errors, longest

    jobs = [gevent.spawn(run) for _ in range(10)]
    gevent.joinall(jobs)
    answers = [n for job in jobs for n in job.value[0]]
    errors = [e for job in jobs for e in job.value[1]]
    return {"pid": os.getpid(), "answers": answers, "errors": errors,
            "resent": gunicorn_barrel.counters()["store_requests_resent"],
            "longest_call": max(job.value[2] for job in jobs)}


def probe_wsgi(environ, start_response):
    if environ.get("PATH_INFO") == "/addr":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ.get('REMOTE_ADDR')} {os.getpid()}".encode()]
    return plain_wsgi(environ, start_response)


wsgi = socketio.WSGIApp(sio, probe_wsgi)
