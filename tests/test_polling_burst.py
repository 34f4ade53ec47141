"""A burst of emits over long-polling: every event handled once, in order, on any worker.

socket.io-client batches what is emitted while a POST is in flight into the
next POST; python-engineio alone refuses a POST of more than 16 packets and
loses all of them (see gunicorn_barrel/compat/engineio_payload.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from engineio import payload

from gunicorn_barrel.compat import engineio_payload
from gunicorn_barrel.compat.versions import IncompatibleLibrary
from tests.harness import REPO, gunicorn
from tests.json_lines import JsonLinesProcess
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON, all_workers_serving

WORKERS = 4
CLIENTS = 4
EVENTS = 1000
BURST_SCRIPT = REPO / "tests" / "js" / "burst_client.mjs"


def test_engineio_still_caps_polling_payloads_where_the_patch_expects() -> None:
    """Fails when python-engineio moves its cap: then compat/engineio_payload.py must be looked at again."""
    probe = (
        "from engineio import payload\n"
        "assert payload.Payload.max_decode_packets == 16, payload.Payload.max_decode_packets\n"
        "try:\n"
        "    payload.Payload(encoded_payload='\\x1e'.join(['4x'] * 17))\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                         check=True)
    assert out.stdout.strip() == "Too many packets in payload"


def test_the_patch_lifts_the_cap() -> None:
    engineio_payload.check()
    engineio_payload.install()
    engineio_payload.install()  # idempotent
    decoded = payload.Payload(encoded_payload="\x1e".join(f"4{n}" for n in range(5000)))
    assert [p.data for p in decoded.packets] == [str(n) for n in range(5000)]


def test_a_moved_cap_stops_the_worker_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(payload.Payload, "max_decode_packets")
    with pytest.raises(IncompatibleLibrary, match="max_decode_packets is no longer an integer"):
        engineio_payload.check()


@pytest.mark.integration
@pytest.mark.skipif(NODE is None or not CLIENT_PACKAGE.is_dir(), reason=NODE_MISSING_REASON)
def test_a_burst_of_1000_emits_over_polling_is_handled_once_in_order(tmp_path: Path) -> None:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=WORKERS) as srv:
        all_workers_serving(srv)
        assert NODE is not None
        node = JsonLinesProcess([NODE, str(BURST_SCRIPT), srv.url, str(CLIENTS), str(EVENTS), "40"],
                                tmp_path / "node.stderr")
        with node:
            result = node.expect("result", 60)
        where = f" (gunicorn log: {srv.log_path})"
        for client in result["clients"]:
            seen = client["seen"]
            assert seen == list(range(EVENTS)), (
                f"client {client['sid']} on worker {client['pid']}: {len(seen)} of {EVENTS} handled, "
                f"{len(set(seen))} distinct, in order: {seen == sorted(seen)}{where}")
        assert "Too many packets" not in srv.log(), where
