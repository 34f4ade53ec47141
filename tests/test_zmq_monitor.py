"""runtime.zmq_monitor reads what a real zeromq socket monitor sends, as pyzmq's own decoder does."""
from __future__ import annotations

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from gunicorn_barrel.runtime import zmq_monitor
from tests.harness import wait_for


def test_connect_and_disconnect_events_of_a_real_monitor() -> None:
    ctx = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    monitor = client.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    seen: list[zmq_monitor.MonitorEvent] = []

    def next_event() -> zmq_monitor.MonitorEvent | None:
        if not monitor.poll(100):
            return None
        parts = monitor.recv_multipart()
        event = zmq_monitor.parse(parts)
        theirs = parse_monitor_message(parts)  # pyzmq's decoder, as the oracle
        assert (event.event, event.value, event.endpoint) == (theirs["event"], theirs["value"],
                                                             theirs["endpoint"])
        seen.append(event)
        return event
    try:
        client.connect(f"tcp://127.0.0.1:{port}")
        connected = wait_for(next_event, 10, "EVENT_CONNECTED")
        assert connected.event == zmq.EVENT_CONNECTED
        assert connected.endpoint == f"tcp://127.0.0.1:{port}".encode()
        server.close()
        wait_for(lambda: next_event() is not None and seen[-1].event == zmq.EVENT_DISCONNECTED, 10,
                 "EVENT_DISCONNECTED")
    finally:
        client.disable_monitor()
        monitor.close()
        client.close()
        server.close()
        ctx.term()


@pytest.mark.parametrize("parts", [[b"\x01\x00\x02\x00\x00\x00"], [b"\x01\x00", b"tcp://x"], []])
def test_what_is_not_a_monitor_event_is_refused(parts: list[bytes]) -> None:
    with pytest.raises(ValueError, match="not a zeromq monitor event"):
        zmq_monitor.parse(parts)
