"""Declaring side processes of one's own (hooks.SideProcess, install(side_processes=...)),
what the supervisor runs for them, and the lifeline wrapper that makes any command
die with the arbiter. No gunicorn here: tests/test_side_processes.py runs them."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gunicorn_barrel import hooks as public_hooks
from gunicorn_barrel.arbiter import hooks
from gunicorn_barrel.arbiter.supervisor import PACKAGE_ROOT
from gunicorn_barrel.arbiter.user_processes import UserSideProcess
from gunicorn_barrel.config import settings as barrel_settings
from gunicorn_barrel.config.settings import SettingsError
from gunicorn_barrel.config.side_processes import SideProcess, declare
from gunicorn_barrel.runtime import lifeline, logs, side_env
from tests.harness import pid_alive, processes_matching, wait_for

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [key for key in os.environ if key.startswith("BARREL_")]:
        monkeypatch.delenv(key)
    saved = dict(hooks._overrides), hooks._declared
    yield
    hooks._overrides.clear()
    hooks._overrides.update(saved[0])
    hooks._declared = saved[1]


# --------------------------------------------------------------------------- the declaration


def test_the_public_name_is_the_declaration() -> None:
    assert public_hooks.SideProcess is SideProcess


def test_a_module_or_a_command_with_args_and_env() -> None:
    by_module = SideProcess("announcer", module="pkg.announcer", args=["--every", "5"])
    assert by_module.argv("/py") == ["/py", "-m", "pkg.announcer", "--every", "5"]
    by_command = SideProcess("indexer", command=["sh", "-c", "exec true"], args=["x"], env={"A": "1"})
    assert by_command.argv("/py") == ["sh", "-c", "exec true", "x"]
    assert by_command.env == {"A": "1"} and by_command.on_reload == "keep"
    assert by_command.ready_timeout is None


def test_lists_and_tuples_declare_the_same_process() -> None:
    assert SideProcess("a", command=["sh", "-c", "x"]) == SideProcess("a", command=("sh", "-c", "x"))
    assert SideProcess("a", module="m", on_reload="restart").launch() == SideProcess("a", module="m").launch()
    assert SideProcess("a", module="m", args=["1"]).launch() != SideProcess("a", module="m").launch()


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "Announcer", "module": "m"}, "invalid side process name 'Announcer'"),
    ({"name": "", "module": "m"}, "invalid side process name ''"),
    ({"name": "a/b", "module": "m"}, "invalid side process name 'a/b'"),
    ({"name": "x" * 41, "module": "m"}, "1 to 40 characters"),
    ({"name": "broadcaster", "module": "m"}, "barrel's own side process has it"),
    ({"name": "store", "module": "m"}, "barrel's own side process has it"),
    ({"name": "a"}, "give either command=[...] or module='...' (neither given)"),
    ({"name": "a", "module": "m", "command": ["sh"]}, "(both given)"),
    ({"name": "a", "command": "sh -c true"}, "command must be a list of strings (no shell"),
    ({"name": "a", "command": ["sh", 1]}, "command items must be strings"),
    ({"name": "a", "command": [""]}, "the command's program is empty"),
    ({"name": "a", "command": ["no-such-program-here"]}, "'no-such-program-here' not found on PATH"),
    ({"name": "a", "module": "m", "args": "--x"}, "args must be a list of strings"),
    ({"name": "a", "module": "not a module"}, "module must be a dotted module name"),
    ({"name": "a", "module": "m", "env": ["A=1"]}, "env must be a mapping of strings"),
    ({"name": "a", "module": "m", "env": {"A": 1}}, "env['A'] must be a string"),
    ({"name": "a", "module": "m", "env": {"A=B": "1"}}, "env key 'A=B' is not a variable name"),
    ({"name": "a", "module": "m", "env": {"GUNICORN_BARREL_BUS": "x"}}, "are set by barrel"),
    ({"name": "a", "module": "m", "on_reload": "reload"}, "on_reload must be one of 'keep', 'restart'"),
    ({"name": "a", "module": "m", "ready_timeout": 0}, "ready_timeout must be None or seconds"),
    ({"name": "a", "module": "m", "ready_timeout": True}, "ready_timeout must be None or seconds"),
    ({"name": "a", "module": "m", "ready_timeout": 301}, "ready_timeout must be None or seconds"),
])
def test_a_bad_declaration_says_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        SideProcess(**fields)
    assert message in str(info.value)


def test_a_path_is_not_looked_up_on_path() -> None:
    # relative to gunicorn's --chdir, which may not be the directory the config is read in
    assert SideProcess("a", command=["bin/not-yet-there"]).command == ("bin/not-yet-there",)


def test_the_declared_path_is_where_a_bare_program_is_looked_up() -> None:
    with pytest.raises(SettingsError, match="'sh' not found on PATH"):
        SideProcess("a", command=["sh"], env={"PATH": "/nonexistent"})


def test_declare_takes_declarations_and_mappings() -> None:
    declared = declare([SideProcess("a", module="m"),
                        {"name": "b", "command": ["sh"], "on_reload": "restart"}])
    assert [(d.name, d.on_reload) for d in declared] == [("a", "keep"), ("b", "restart")]
    assert declare(()) == ()


@pytest.mark.parametrize(("items", "message"), [
    ({"name": "a", "module": "m"}, "side_processes must be a list of hooks.SideProcess"),
    ("a", "side_processes must be a list of hooks.SideProcess"),
    ([("a", "m")], "expected hooks.SideProcess or a mapping"),
    ([{"name": "a", "modul": "m"}], "side process 'a': unknown key(s) 'modul'; known: name, command"),
    ([{"module": "m"}], "side process: 'name' is missing"),
    ([SideProcess("a", module="m"), {"name": "a", "module": "n"}], "the name 'a' is declared twice"),
])
def test_declare_refuses_what_is_not_a_list_of_declarations(items: object, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        declare(items)
    assert message in str(info.value)


def test_install_records_the_declarations() -> None:
    hooks.install({}, side_processes=[SideProcess("a", module="m")], gap_timeout=1.0)
    assert [d.name for d in hooks._declared] == ["a"]
    assert hooks._overrides == {"gap_timeout": 1.0}
    hooks.install({})
    assert hooks._declared == ()


def test_install_with_a_bad_declaration_changes_nothing() -> None:
    hooks.install({}, side_processes=[SideProcess("a", module="m")])
    namespace: dict[str, Any] = {}
    with pytest.raises(SettingsError, match="declared twice"):
        hooks.install(namespace, side_processes=[{"name": "b", "module": "m"}] * 2)
    assert namespace == {}
    assert [d.name for d in hooks._declared] == ["a"]


# --------------------------------------------------------------------------- what runs


class _Log:
    def __init__(self) -> None:
        self.error_log = logging.getLogger("test-side-process-config")
        self.error_log.setLevel(logging.WARNING)

    def info(self, msg: str, *args: object) -> None: ...
    warning = error = info


def test_a_user_side_process_runs_through_the_lifeline_with_its_instance_in_its_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    settings = barrel_settings.resolve({"max_frame_size": 4096}, environ={})
    declaration = SideProcess("ann", module="pkg.ann", args=["-v"], env={"LANG": "C"})
    proc = UserSideProcess(declaration, "/run/barrel-1", settings, _Log())
    assert proc.command() == [sys.executable, "-m", lifeline.MODULE, str(os.getpid()), "--",
                              sys.executable, "-m", "pkg.ann", "-v"]
    env = proc.environment()
    assert env["LANG"] == "C"
    assert env["PYTHONPATH"] == os.pathsep.join([PACKAGE_ROOT, "/elsewhere"])
    assert env[logs.LEVEL_ENV] == str(logging.WARNING)
    expected = side_env.SideInstance("ann", "/run/barrel-1", os.getpid(), "zmq", "", 4096)
    assert side_env.current(env) == expected
    assert proc.name == "ann" and proc.restarts == 0 and proc.pid is None  # what status lists


def test_a_declared_pythonpath_keeps_barrel_importable() -> None:
    settings = barrel_settings.resolve({}, environ={})
    declaration = SideProcess("ann", module="pkg.ann", env={"PYTHONPATH": "/app"})
    env = UserSideProcess(declaration, "/run/x", settings, _Log()).environment()
    assert env["PYTHONPATH"] == os.pathsep.join(["/app", PACKAGE_ROOT])


def test_the_package_root_is_where_the_package_is_imported_from() -> None:
    # Not the package's own folder: that would make its modules top-level names (config, events...).
    assert Path(PACKAGE_ROOT) / "gunicorn_barrel" == Path(hooks.__file__).resolve().parent.parent


def test_side_env_of_a_process_barrel_did_not_start() -> None:
    assert side_env.current({}) is None
    with pytest.raises(RuntimeError, match="not started by barrel's supervisor"):
        side_env.current({side_env.RUNTIME_DIR: "/x", side_env.NAME: "a"})


# --------------------------------------------------------------------------- the lifeline


def _lifeline(parent: int, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", lifeline.MODULE, str(parent), "--", *command],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


def test_the_lifeline_execs_the_command_in_its_place_with_default_signals() -> None:
    # The shell's parent is ours: the lifeline became the shell (exec, not a child). It
    # ignores no signal: Python ignores SIGPIPE and SIGXFSZ, and the lifeline put them back.
    done = _lifeline(os.getpid(), "sh", "-c", 'echo "$PPID"; grep SigIgn /proc/$$/status')
    assert done.returncode == 0, done.stderr
    ppid, ignored = done.stdout.splitlines()
    assert ppid == str(os.getpid())
    assert int(ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0


def test_the_lifeline_runs_nothing_when_its_parent_is_not_the_one_named() -> None:
    done = _lifeline(1, "sh", "-c", "echo ran")
    assert done.returncode != 0
    assert "ran" not in done.stdout
    assert "not started, the arbiter (1) is gone" in done.stderr


def test_the_lifeline_says_when_the_command_cannot_run() -> None:
    done = _lifeline(os.getpid(), "/nonexistent/program")
    assert done.returncode == lifeline.EXIT_CANNOT_RUN
    assert "cannot run '/nonexistent/program'" in done.stderr


def test_the_lifelines_command_gets_sigterm_when_its_parent_dies() -> None:
    # A parent that starts `sleep` through the lifeline, prints its pid, then is SIGKILLed.
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         "from gunicorn_barrel.runtime import lifeline\n"
         "p = subprocess.Popen(lifeline.command_line(os.getpid(), ['sleep', '609']))\n"
         "print(p.pid, flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        wait_for(lambda: child in processes_matching("sleep 609"), 10, "the lifeline to exec sleep")
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not pid_alive(child), 5, "sleep to die with its parent")
    finally:
        parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
