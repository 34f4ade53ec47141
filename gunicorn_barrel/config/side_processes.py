"""Side processes of your own, declared in the config file: what to run, with what, and when.

    from gunicorn_barrel import hooks
    hooks.install(globals(), side_processes=[
        hooks.SideProcess("announcer", module="myapp.announcer", args=["--every", "30"]),
        hooks.SideProcess("indexer", command=["/usr/local/bin/indexer", "--watch"],
                          env={"INDEX_DIR": "/srv/index"}, on_reload="restart"),
    ])

The arbiter runs each one as it runs the broadcaster (``arbiter.user_processes``).
A declaration is checked when it is made and again by ``declare()`` (which
``install()`` calls), so a mistake stops gunicorn at start naming the process
and the field. A plain mapping with the same keys is accepted too.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from gunicorn_barrel.config.settings import BROADCASTER, STORE_SERVER, SettingsError
from gunicorn_barrel.runtime import side_env

NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}\Z")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
RESERVED_NAMES = (BROADCASTER, STORE_SERVER)
ON_RELOAD = ("keep", "restart")
# What the supervisor sets in every side process's environment (runtime.side_env, runtime.logs).
RESERVED_ENV_PREFIX = side_env.PREFIX
MAX_READY_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class SideProcess:
    """One side process: ``command`` (an argument list, no shell) or ``module`` (run as
    ``python -m``), then ``args``; ``env`` is added to gunicorn's environment.

    ``on_reload``: on HUP, ``"keep"`` the running process (default) or ``"restart"`` it.
    A changed declaration is restarted either way. ``ready_timeout``: seconds gunicorn's
    start waits for the process to call ``gunicorn_barrel.side.ready()`` (None, the
    default: started means spawned).
    """

    name: str
    command: Sequence[str] = ()
    module: str | None = None
    args: Sequence[str] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    on_reload: str = "keep"
    ready_timeout: float | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not NAME.match(name):
            raise SettingsError(f"invalid side process name {name!r}: 1 to 40 characters, lower-case "
                                "letters, digits, '-' and '_', starting with a letter")
        if name in RESERVED_NAMES:
            raise SettingsError(f"invalid side process name {name!r}: barrel's own side process "
                                f"has it (reserved: {', '.join(RESERVED_NAMES)})")
        # Normalised to immutable values: a declaration compares equal to an equal one.
        object.__setattr__(self, "command", _arguments(name, "command", self.command))
        object.__setattr__(self, "args", _arguments(name, "args", self.args))
        object.__setattr__(self, "env", _environment(name, self.env))
        if bool(self.command) == (self.module is not None):
            raise SettingsError(f"side process {name!r}: give either command=[...] or module='...' "
                                f"({'both' if self.command else 'neither'} given)")
        if self.module is not None and (not isinstance(self.module, str) or not _MODULE.match(self.module)):
            raise SettingsError(f"side process {name!r}: module must be a dotted module name, "
                                f"got {self.module!r}")
        if self.on_reload not in ON_RELOAD:
            raise SettingsError(f"side process {name!r}: on_reload must be one of "
                                f"{', '.join(map(repr, ON_RELOAD))}, got {self.on_reload!r}")
        timeout = self.ready_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout <= MAX_READY_TIMEOUT):
            raise SettingsError(f"side process {name!r}: ready_timeout must be None or seconds "
                                f"in (0, {MAX_READY_TIMEOUT:.0f}], got {timeout!r}")
        if self.command:
            _check_program(name, self.command[0], self.env)

    def argv(self, python: str) -> list[str]:
        """The command line, with ``python`` running a module."""
        start = list(self.command) if self.command else [python, "-m", str(self.module)]
        return [*start, *self.args]

    def launch(self) -> tuple[Any, ...]:
        """What the running process was started with: a change needs a restart."""
        return (self.command, self.module, self.args, self.env)


def _arguments(name: str, field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SettingsError(f"side process {name!r}: {field} must be a list of strings "
                            f"(no shell: one item per argument), got {value!r}")
    for item in value:
        if not isinstance(item, str) or "\0" in item:
            raise SettingsError(f"side process {name!r}: {field} items must be strings "
                                f"without NUL, got {item!r}")
    if field == "command" and value and not value[0]:
        raise SettingsError(f"side process {name!r}: the command's program is empty")
    return tuple(value)


def _environment(name: str, value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise SettingsError(f"side process {name!r}: env must be a mapping of strings, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise SettingsError(f"side process {name!r}: env key {key!r} is not a variable name")
        if key.startswith(RESERVED_ENV_PREFIX):
            raise SettingsError(f"side process {name!r}: env key {key!r}: the {RESERVED_ENV_PREFIX}* "
                                "variables are set by barrel")
        if not isinstance(item, str) or "\0" in item:
            raise SettingsError(f"side process {name!r}: env[{key!r}] must be a string, got {item!r}")
    return dict(value)


def _check_program(name: str, program: str, env: Mapping[str, str]) -> None:
    """A bare program name must be found on PATH now: a typo stops gunicorn at start."""
    if os.sep in program:
        return  # a path: it may be relative to gunicorn's --chdir, checked when it runs
    if shutil.which(program, path=env.get("PATH", os.environ.get("PATH"))) is None:
        raise SettingsError(f"side process {name!r}: program {program!r} not found on PATH")


_FIELDS = tuple(field.name for field in dataclasses.fields(SideProcess))


def declare(items: object) -> tuple[SideProcess, ...]:
    """The ``side_processes`` argument of ``install()``, checked: SideProcess objects or mappings."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise SettingsError(f"side_processes must be a list of hooks.SideProcess, got {items!r}")
    declared: list[SideProcess] = []
    for item in items:
        if isinstance(item, Mapping):
            item = _from_mapping(item)
        elif not isinstance(item, SideProcess):
            raise SettingsError(f"side_processes: expected hooks.SideProcess or a mapping, got {item!r}")
        if any(other.name == item.name for other in declared):
            raise SettingsError(f"side_processes: the name {item.name!r} is declared twice")
        declared.append(item)
    return tuple(declared)


def _from_mapping(item: Mapping[Any, Any]) -> SideProcess:
    label = repr(item.get("name", "?"))
    unknown = sorted(str(key) for key in item if key not in _FIELDS)
    if unknown:
        raise SettingsError(f"side process {label}: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(_FIELDS)}")
    if "name" not in item:
        raise SettingsError("side process: 'name' is missing")
    return SideProcess(**item)
