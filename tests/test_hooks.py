"""Unit tests for chaining barrel's gunicorn hooks with the user's (gunicorn_barrel.hooks).

No hook that starts a broadcaster or connects a bus client is ever called here:
ordering is tested with chain() on fake barrel hooks, and install() with the
barrel hooks it would install replaced (in ``hooks._HOOKS``) by recording fakes
of the same arity.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gunicorn.config import validate_callable

from gunicorn_barrel.arbiter import hooks
from gunicorn_barrel.config import instance
from gunicorn_barrel.config import settings as barrel_settings
from gunicorn_barrel.config.settings import SettingsError

# name -> arity gunicorn requires of that server hook
ARITY = {"on_starting": 1, "on_reload": 1, "post_worker_init": 1, "worker_exit": 2, "on_exit": 1}
STARTUP = ("on_starting", "on_reload", "post_worker_init")
EXIT = ("worker_exit", "on_exit")

calls: list[str] = []  # written by the module-level user hooks, which are named by dotted strings


def dotted_user_on_exit(server: Any) -> None:
    calls.append("dotted user")


def dotted_user_two_args(server: Any, worker: Any) -> None:
    calls.append("dotted user")


@pytest.fixture(autouse=True)
def isolated_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore hooks._overrides after each test; keep real BARREL_* variables out of install()."""
    for key in [key for key in os.environ if key.startswith("BARREL_")]:
        monkeypatch.delenv(key)
    saved = dict(hooks._overrides)
    calls.clear()
    yield
    hooks._overrides.clear()
    hooks._overrides.update(saved)


def _hook(arity: int, log: list[str], label: str) -> Callable[..., None]:
    """A hook of ``arity`` positional parameters that appends ``label`` to ``log``."""
    if arity == 1:

        def one(server: Any) -> None:
            log.append(label)

        return one

    def two(server: Any, worker: Any) -> None:
        log.append(label)

    return two


@pytest.fixture
def fake_barrel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the barrel hooks install() uses by recording fakes; keep the barrel_first flags."""
    log: list[str] = []
    for name, (_real, barrel_first) in list(hooks._HOOKS.items()):
        fake = _hook(ARITY[name], log, "barrel")
        fake.__name__ = name
        monkeypatch.setitem(hooks._HOOKS, name, (fake, barrel_first))
    return log


def _user_hooks(log: list[str]) -> dict[str, Any]:
    return {name: _hook(arity, log, "user") for name, arity in ARITY.items()}


def _args(name: str) -> tuple[object, ...]:
    return tuple(object() for _ in range(ARITY[name]))


# --------------------------------------------------------------------------- chain()


@pytest.mark.parametrize("arity", [1, 2])
@pytest.mark.parametrize(("barrel_first", "order"), [(True, ["barrel", "user"]), (False, ["user", "barrel"])])
def test_chain_runs_both_hooks_in_order(arity: int, barrel_first: bool, order: list[str]) -> None:
    log: list[str] = []
    chained = hooks.chain(_hook(arity, log, "barrel"), _hook(arity, log, "user"), barrel_first)
    chained(*range(arity))
    assert log == order


def test_chain_runs_barrel_first_by_default() -> None:
    log: list[str] = []
    hooks.chain(_hook(1, log, "barrel"), _hook(1, log, "user"))(None)
    assert log == ["barrel", "user"]


def test_chain_passes_the_same_arguments_to_both() -> None:
    seen: list[tuple[object, ...]] = []

    def barrel(server: Any, worker: Any) -> None:
        seen.append((server, worker))

    def user(server: Any, worker: Any) -> None:
        seen.append((server, worker))

    server, worker = object(), object()
    hooks.chain(barrel, user)(server, worker)
    assert seen == [(server, worker), (server, worker)]


def test_chain_stops_when_the_first_hook_raises() -> None:
    log: list[str] = []

    def barrel(server: Any) -> None:
        raise RuntimeError("barrel failed")

    with pytest.raises(RuntimeError, match="barrel failed"):
        hooks.chain(barrel, _hook(1, log, "user"))(None)
    assert log == []


@pytest.mark.parametrize("arity", [1, 2])
def test_chained_hook_keeps_barrel_signature_and_name(arity: int) -> None:
    barrel = _hook(arity, [], "barrel")
    chained = hooks.chain(barrel, _hook(arity, [], "user"))
    assert inspect.signature(chained) == inspect.signature(barrel)
    assert chained.__name__ == barrel.__name__
    assert getattr(chained, "__barrel_hook__", False) is True
    assert validate_callable(arity)(chained) is chained
    with pytest.raises(TypeError, match="arity"):
        validate_callable(3 - arity)(chained)


def test_chain_resolves_a_dotted_user_hook() -> None:
    log: list[str] = []
    chained = hooks.chain(_hook(1, log, "barrel"), f"{__name__}.dotted_user_on_exit", barrel_first=False)
    chained(None)
    assert calls == ["dotted user"]
    assert log == ["barrel"]


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (lambda: None, "arity of: 1"),
        (lambda server, worker: None, "arity of: 1"),
        (42, "not callable"),
        ("no_dots_here", "not import string"),
        (f"{__name__}.no_such_function", "Can not load"),
    ],
)
def test_chain_refuses_a_bad_user_hook(user: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        hooks.chain(_hook(1, [], "barrel"), user)


# --------------------------------------------------------------------------- install()


def test_barrel_hooks_have_gunicorn_arity_and_documented_order() -> None:
    assert set(hooks._HOOKS) == set(ARITY)
    for name, (hook, barrel_first) in hooks._HOOKS.items():
        assert hook is getattr(hooks, name)
        assert barrel_first is (name in STARTUP)
        assert validate_callable(ARITY[name])(hook) is hook


def test_install_without_user_hooks_sets_the_barrel_hooks() -> None:
    namespace: dict[str, Any] = {"bind": "127.0.0.1:8000"}
    hooks.install(namespace)
    for name, arity in ARITY.items():
        assert namespace[name] is getattr(hooks, name)
        assert validate_callable(arity)(namespace[name]) is namespace[name]
    assert namespace["bind"] == "127.0.0.1:8000"
    assert hooks._overrides == {}


def test_install_treats_none_as_no_user_hook() -> None:
    namespace: dict[str, Any] = dict.fromkeys(ARITY)
    hooks.install(namespace)
    assert all(namespace[name] is getattr(hooks, name) for name in ARITY)


def test_install_records_validated_settings() -> None:
    hooks.install({}, max_frame_size=2048, websocket_deflate="on")
    assert hooks._overrides == {"max_frame_size": 2048, "websocket_deflate": "on"}
    hooks.install({}, restart_delay=1)
    assert hooks._overrides == {"restart_delay": 1}


def test_install_chains_user_hooks_with_valid_gunicorn_callables() -> None:
    user = _user_hooks([])
    namespace: dict[str, Any] = dict(user)
    hooks.install(namespace)
    for name, arity in ARITY.items():
        installed = namespace[name]
        assert installed is not user[name]
        assert installed is not getattr(hooks, name)
        assert getattr(installed, "__barrel_hook__", False) is True
        assert validate_callable(arity)(installed) is installed


@pytest.mark.parametrize("name", STARTUP)
def test_install_runs_barrel_first_for_startup_hooks(name: str, fake_barrel: list[str]) -> None:
    namespace = _user_hooks(fake_barrel)
    hooks.install(namespace)
    namespace[name](*_args(name))
    assert fake_barrel == ["barrel", "user"]


@pytest.mark.parametrize("name", EXIT)
def test_install_runs_user_first_for_exit_hooks(name: str, fake_barrel: list[str]) -> None:
    namespace = _user_hooks(fake_barrel)
    hooks.install(namespace)
    namespace[name](*_args(name))
    assert fake_barrel == ["user", "barrel"]


@pytest.mark.parametrize(
    ("name", "dotted"),
    [("on_exit", "dotted_user_on_exit"), ("worker_exit", "dotted_user_two_args")],
)
def test_install_resolves_dotted_user_hooks(name: str, dotted: str) -> None:
    # With no supervisor and no bus client in this process, the real exit hooks are no-ops.
    assert hooks.supervisor() is None
    namespace: dict[str, Any] = {name: f"{__name__}.{dotted}"}
    hooks.install(namespace)
    assert callable(namespace[name])
    assert validate_callable(ARITY[name])(namespace[name]) is namespace[name]
    namespace[name](*_args(name))
    assert calls == ["dotted user"]


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("worker_exit", lambda server: None),
        ("on_starting", lambda: None),
        ("post_worker_init", lambda worker, extra: None),
        ("on_exit", f"{__name__}.dotted_user_two_args"),
    ],
)
def test_install_refuses_user_hook_of_wrong_arity(name: str, user: Any) -> None:
    with pytest.raises(TypeError, match=f"arity of: {ARITY[name]}"):
        hooks.install({name: user})


def test_install_refuses_unimportable_dotted_hook() -> None:
    with pytest.raises(TypeError, match="Can not load"):
        hooks.install({"on_exit": f"{__name__}.no_such_function"})


def test_install_twice_without_user_hooks_keeps_the_plain_barrel_hooks() -> None:
    namespace: dict[str, Any] = {}
    hooks.install(namespace)
    hooks.install(namespace)
    assert all(namespace[name] is getattr(hooks, name) for name in ARITY)


@pytest.mark.parametrize("name", list(ARITY))
def test_install_twice_does_not_chain_barrel_with_itself(name: str, fake_barrel: list[str]) -> None:
    namespace = _user_hooks(fake_barrel)
    hooks.install(namespace)
    hooks.install(namespace)
    namespace[name](*_args(name))
    assert fake_barrel.count("barrel") == 1


@pytest.mark.parametrize("name", list(ARITY))
def test_install_twice_keeps_the_user_hook(name: str, fake_barrel: list[str]) -> None:
    namespace = _user_hooks(fake_barrel)
    hooks.install(namespace)
    hooks.install(namespace)
    namespace[name](*_args(name))
    assert sorted(fake_barrel) == ["barrel", "user"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_frame_sise": 2048}, "unknown barrel setting 'max_frame_sise' (config file)"),
        ({"max_frame_size": "big"}, "invalid barrel setting max_frame_size (config file)"),
    ],
)
def test_install_with_bad_setting_leaves_everything_untouched(
    settings: dict[str, object], message: str
) -> None:
    hooks._overrides.clear()
    hooks._overrides["restart_delay"] = 2
    user = _user_hooks([])
    namespace: dict[str, Any] = dict(user)
    with pytest.raises(SettingsError) as info:
        hooks.install(namespace, **settings)
    assert message in str(info.value)
    assert namespace == user
    assert hooks._overrides == {"restart_delay": 2}


class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, *args: object) -> None:
        self.warnings.append(msg % args)

    info = error = warning


class _Server:
    def __init__(self) -> None:
        self.log = _Log()
        self.cfg = type("Cfg", (), {"uid": os.getuid(), "gid": os.getgid(), "worker_connections": 1000})()


def test_a_reload_keeps_the_settings_fixed_at_start_and_applies_the_others() -> None:
    active = barrel_settings.resolve({}, environ={})
    hooks.install({}, max_frame_size=2 * 1024 * 1024, gap_timeout=1.0, store_durability="power")
    instance.record(active, "/run/x")
    server = _Server()
    try:
        hooks.on_reload(server)
        reloaded = instance.settings()
    finally:
        instance.record(None, None)
    assert reloaded is not None
    assert reloaded.gap_timeout == 1.0
    assert (reloaded.max_frame_size, reloaded.store_durability) == (active.max_frame_size, "process")
    assert sorted(server.log.warnings) == [
        f"barrel setting {name} changed; it takes effect on restart"
        for name in ("max_frame_size", "store_durability")]


def test_side_processes_get_their_settings_on_the_command_line() -> None:
    values = barrel_settings.resolve({"store_max_value": 1000}, environ={})
    procs = hooks._side_processes(values, "/run/x", _Server())
    assert [(p.name, p.module) for p in procs] == [
        ("broadcaster", "gunicorn_barrel.bus.zeromq.broadcaster"),
        ("store", "gunicorn_barrel.store.embedded.server")]
    assert "--store-max-value=1000" in procs[1].args
    assert hooks._side_processes(dataclasses.replace(values, bus="redis://h:6379/0"), "/r", _Server()) == []
