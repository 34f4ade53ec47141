"""The compatibility layer: tested version ranges, a shape check per patched target, refusal to start.

Every target barrel patches or relies on is removed or changed here in turn
(monkeypatched, in this process only): the check must name the library, its
installed version and what changed. tests/test_compat_in_effect.py shows the
patches really run on engine.io's paths.
"""
from __future__ import annotations

import ast
import configparser
import inspect
import logging
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent.socket
import pytest
import socketio
from engineio import base_socket
from engineio.async_drivers import gevent as engineio_gevent
from engineio.base_server import BaseServer
from engineio.socket import Socket
from gunicorn import http
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http2 import negotiation
from gunicorn.workers.ggevent import GeventWorker
from packaging.requirements import Requirement
from socketio import base_manager as socketio_base_manager
from socketio import base_server as socketio_base_server

from gunicorn_barrel.compat import apply, socketio_api, socketio_connect, versions
from gunicorn_barrel.compat.versions import IncompatibleLibrary, installed_version
from tests.harness import REPO, Gunicorn

ENGINEIO, SOCKETIO, GUNICORN, GEVENT = "python-engineio", "python-socketio", "gunicorn", "gevent"

# (library, owner, attribute, the parameters barrel relies on): every method barrel replaces or calls.
TARGETS: list[tuple[str, Any, str, tuple[str, ...]]] = [
    (ENGINEIO, Socket, "schedule_ping", ("self",)),
    (ENGINEIO, Socket, "poll", ("self",)),
    (ENGINEIO, Socket, "send", ("self", "pkt")),
    (ENGINEIO, Socket, "close", ("self", "wait", "abort")),
    (ENGINEIO, Socket, "_upgrade_websocket", ("self", "environ", "start_response")),
    (ENGINEIO, Socket, "_websocket_handler", ("self", "ws")),
    (ENGINEIO, Socket, "receive", ("self", "pkt")),
    (ENGINEIO, BaseServer, "generate_id", ("self",)),
    *[(SOCKETIO, socketio.PubSubManager, name, params)
      for name, params in socketio_api.MANAGER_METHODS.items()],
    (SOCKETIO, socketio.Server, "_send_eio_packet", ("self", "eio_sid", "eio_pkt")),
    (SOCKETIO, socketio.Server, "_handle_connect", socketio_connect.PARAMETERS),
    (SOCKETIO, socketio.Server, "_send_packet", socketio_connect.SEND_PARAMETERS),
    (SOCKETIO, socketio.Server, "_handle_eio_disconnect", socketio_connect.EIO_DISCONNECT_PARAMETERS),
    *[(SOCKETIO, socketio.Server, name, params) for name, params in socketio_api.SERVER_METHODS.items()],
    (GUNICORN, GeventWorker, "handle", ("self", "listener", "client", "addr")),
    (GUNICORN, GeventWorker, "handle_request", ("self", "listener_name", "req", "sock", "addr")),
    (GUNICORN, GeventWorker, "handle_error", ("self", "req", "client", "addr", "exc")),
    (GUNICORN, GeventWorker, "timeout_ctx", ("self",)),
    (GUNICORN, gunicorn_parser.Parser, "finish_body", ("self", "deadline", "max_bytes")),
    (GUNICORN, http, "get_parser", ("cfg", "source", "source_addr")),
    (GUNICORN, negotiation, "prior_knowledge_allowed", ("cfg", "peer_addr")),
]


def _target_id(target: tuple[str, Any, str, tuple[str, ...]]) -> str:
    return f"{target[1].__name__}.{target[2]}"


def _defining(owner: Any, name: str) -> Any:
    """The class (or module) whose own namespace holds ``name``."""
    return next((c for c in getattr(owner, "__mro__", ()) if name in vars(c)), owner)


def _remove(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    """Remove ``name`` from ``owner`` and from every base class that defines it too."""
    for holder in [c for c in getattr(owner, "__mro__", (owner,)) if name in vars(c)]:
        monkeypatch.delattr(holder, name)


def _refused(dist: str, *fragments: str) -> IncompatibleLibrary:
    with pytest.raises(IncompatibleLibrary) as refused:
        apply.check_all()
    message = str(refused.value)
    assert refused.value.dist == dist, message
    assert message.startswith(f"{dist} {versions.installed_version(dist)}: "), message
    assert versions.tested(dist).describe() in message, message
    for fragment in fragments:
        assert fragment in message, message
    return refused.value


def test_the_installed_libraries_pass_every_check() -> None:
    assert apply.check_all() == []


@pytest.mark.parametrize("target", [t for t in TARGETS if t[2] != "__init__"], ids=_target_id)
def test_a_target_that_is_gone_is_refused(monkeypatch: pytest.MonkeyPatch, target: Any) -> None:
    dist, owner, name, _params = target
    _remove(monkeypatch, owner, name)
    _refused(dist, f"{name} is gone")


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_a_target_whose_parameters_changed_is_refused(monkeypatch: pytest.MonkeyPatch, target: Any) -> None:
    dist, owner, name, params = target
    changed = (*params[:-1], "renamed")

    def replacement(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("never called: the check only inspects it")

    replacement.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in changed])
    monkeypatch.setattr(_defining(owner, name), name, replacement)
    if owner is gunicorn_parser.Parser:  # checked on a parser instance: a bound method, no self
        changed = changed[1:]
    _refused(dist, f"{name} takes ({', '.join(changed)})")


def _without_after_init(monkeypatch: pytest.MonkeyPatch, cls: Any, attribute: str) -> None:
    original = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        delattr(self, attribute)

    monkeypatch.setattr(cls, "__init__", init)


@pytest.mark.parametrize(("cls", "attribute"), [
    (base_socket.BaseSocket, "upgraded"),
    (base_socket.BaseSocket, "queue"),
    (BaseServer, "max_http_buffer_size"),
    (base_socket.BaseSocket, "upgrading"),
    (base_socket.BaseSocket, "connected"),
])
def test_an_engineio_object_without_an_attribute_barrel_reads_is_refused(
    monkeypatch: pytest.MonkeyPatch, cls: Any, attribute: str
) -> None:
    _without_after_init(monkeypatch, cls, attribute)
    _refused(ENGINEIO, f"has no attribute {attribute}")


@pytest.mark.parametrize(("cls", "attribute"), [
    (socketio_base_manager.BaseManager, "rooms"),
    (socketio_base_server.BaseServer, "packet_class"),
])
def test_a_socketio_object_without_an_attribute_barrel_reads_is_refused(
    monkeypatch: pytest.MonkeyPatch, cls: Any, attribute: str
) -> None:
    _without_after_init(monkeypatch, cls, attribute)
    _refused(SOCKETIO, f"has no attribute {attribute}")


def test_engineio_gevent_driver_table_without_its_websocket_entry_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(engineio_gevent._async, "websocket")
    _refused(ENGINEIO, "_async is no longer a dict with a 'websocket' entry")
    monkeypatch.delattr(engineio_gevent, "_async")
    _refused(ENGINEIO, "engineio.async_drivers.gevent._async is gone")


def test_engineio_sockets_that_stop_hashing_by_identity_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Socket, "__hash__", lambda self: 0)
    _refused(ENGINEIO, "no longer hashes by identity")


def test_a_gevent_socket_without_its_os_socket_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoRawSocket:  # gevent.socket.socket without ``_sock``
        def close(self) -> None:
            pass

    monkeypatch.setattr(gevent.socket, "socket", NoRawSocket)
    _refused(GEVENT, "gevent.socket.socket()._sock is gone")


@pytest.mark.parametrize("gone", ["timer", "io"])
def test_a_gevent_loop_without_the_watchers_barrel_uses_is_refused(
    monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    loop = gevent.get_hub().loop
    kept = {name: getattr(loop, name) for name in ("timer", "io") if name != gone}
    monkeypatch.setattr(gevent, "get_hub", lambda: types.SimpleNamespace(loop=types.SimpleNamespace(**kept)))
    _refused(GEVENT, f"gevent's loop.{gone} is gone")


def test_a_gunicorn_parser_without_its_read_buffer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_after_init(monkeypatch, http.unreader.Unreader, "buf")
    _refused(GUNICORN, "parser.unreader.buf is no longer a BytesIO")


def _versions(monkeypatch: pytest.MonkeyPatch, **pretend: str) -> None:
    """Make the checks see other installed versions (keyword: distribution with '_' for '-')."""
    real: Callable[[str], str | None] = versions.installed_version
    fake = {dist.replace("_", "-"): version for dist, version in pretend.items()}
    monkeypatch.setattr(versions, "installed_version", lambda dist: fake.get(dist, real(dist)))


@pytest.mark.parametrize("spec", [t for t in versions.TESTED if t.patched], ids=lambda t: t.dist)
def test_a_patched_library_outside_its_tested_range_is_refused(
    monkeypatch: pytest.MonkeyPatch, spec: versions.Tested
) -> None:
    newer = f"{spec.below}.0"
    _versions(monkeypatch, **{spec.dist.replace("-", "_"): newer})
    refused = _refused(spec.dist, "newer than the versions tested", "patches its internals")
    assert refused.version == newer
    older = "0.1"
    _versions(monkeypatch, **{spec.dist.replace("-", "_"): older})
    _refused(spec.dist, f"older than {spec.oldest}")


def test_a_newer_pyzmq_is_only_a_warning_an_older_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(monkeypatch, pyzmq="99.0.0")
    (note,) = apply.check_all()
    assert note == "pyzmq 99.0.0: newer than the versions tested; barrel uses only its public API"
    _versions(monkeypatch, pyzmq="25.1.0")
    _refused("pyzmq", "older than 26")


def test_a_library_that_is_not_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda dist: None if dist == GEVENT else real(dist))
    with pytest.raises(IncompatibleLibrary, match="gevent \\(not installed\\): not installed"):
        apply.check_all()


def test_setup_cfg_declares_the_tested_ranges() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    declared = {Requirement(line).name: Requirement(line)
                for line in parser["options"]["install_requires"].split("\n") if line.strip()}
    for spec in versions.TESTED:
        assert str(declared[spec.dist].specifier) == str(Requirement(spec.requirement()).specifier), spec.dist
        # The installed version is the newest tested one: within the range.
        assert declared[spec.dist].specifier.contains(installed_version(spec.dist) or "")


def test_a_worker_refuses_to_start_with_an_untested_engineio(tmp_path: Path) -> None:
    # A distribution record earlier on sys.path is what importlib.metadata
    # reports: the workers see python-engineio 4.16.0, the real package runs.
    record = tmp_path / "python_engineio-4.16.0.dist-info"
    record.mkdir()
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: python-engineio\nVersion: 4.16.0\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    server = Gunicorn(workers=2, env=env)
    try:
        # 3 is gunicorn's "Worker failed to boot"; when both workers fail at once,
        # gunicorn 27's halt() meets the second failure and exits with 1 instead.
        with pytest.raises(AssertionError, match="gunicorn exited with [13]:"):
            server.start(timeout=60)
        log = server.log()
    finally:
        server.stop()
    assert ("barrel: refusing to start: python-engineio 4.16.0: newer than the versions tested, "
            "and barrel patches its internals. gunicorn_barrel is tested with "
            "python-engineio >=4.13.2,<4.16") in log
    assert "Worker failed to boot" in log



def _defined_in(cls: ast.ClassDef) -> set[str]:
    names = set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _socketio_names_used(source: str, cls_name: str) -> set[str]:
    """What class ``cls_name`` (a PubSubManager subclass) takes from python-socketio."""
    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls_name)
    ours = _defined_in(cls)
    fresh = socketio.PubSubManager(channel="test")
    used = set()
    for node in ast.walk(cls):
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super":
            used.add(node.attr)  # the parent's own, even where we override it
        elif (isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr not in ours
              and hasattr(fresh, node.attr)):
            used.add(node.attr)
    # Handlers looked up by name (a string table in the module).
    return used | {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and n.value.startswith("_handle_")}


def test_every_python_socketio_name_the_manager_uses_is_checked() -> None:
    source = (REPO / "gunicorn_barrel" / "sio" / "manager.py").read_text()
    used = _socketio_names_used(source, "BarrelManager")
    assert {"__init__", "_handle_callback", "rooms"} <= used  # the scan sees them
    assert used - set(socketio_api.MANAGER_METHODS) - set(socketio_api.MANAGER_ATTRIBUTES) == set()


def test_an_admin_instrumentation_without_what_barrel_sets_is_refused() -> None:
    from gunicorn_barrel.compat import socketio_admin

    quiet = logging.getLogger("tests.compat")
    server = socketio.Server(async_mode="gevent", logger=quiet, engineio_logger=quiet, monitor_clients=False)
    instrumented = server.instrument(auth=False)
    try:
        socketio_admin.check(instrumented)  # the installed python-socketio passes
        del instrumented.stats_task
        with pytest.raises(IncompatibleLibrary, match="has no attribute stats_task"):
            socketio_admin.check(instrumented)
    finally:  # instrument() patched engine.io's Socket class for this process
        instrumented.uninstrument()
