"""Side processes of the user's own (``hooks.SideProcess``), run as barrel runs the broadcaster.

Each is a ``SideProcessSupervisor`` in the arbiter's list of side processes,
so whatever lists those (status, metrics) lists them too. What differs from
barrel's own:

- the command runs through ``runtime.lifeline`` (which asks the kernel for
  SIGTERM when the arbiter dies, then execs it: same pid), since the command
  cannot ask for it itself;
- its environment is gunicorn's plus the declared ``env`` plus the
  ``GUNICORN_BARREL_*`` variables that name the instance (``runtime.side_env``),
  with which ``gunicorn_barrel.side`` emits to the workers' clients;
- started means spawned, unless the declaration has a ``ready_timeout``;
- stdout lines are logged as INFO, stderr lines as ERROR, each prefixed with
  its name; stops and restarts signal its whole process group;
- on HUP (``reload``) it is kept or restarted as declared, restarted when its
  declaration changed, stopped when the config no longer declares it, and
  started when the config declares it for the first time.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from gunicorn_barrel.arbiter.supervisor import PACKAGE_ROOT, Logger, SideProcessSupervisor
from gunicorn_barrel.config.settings import BarrelSettings
from gunicorn_barrel.config.side_processes import SideProcess
from gunicorn_barrel.runtime import lifeline, side_env


class UserSideProcess(SideProcessSupervisor):
    """Supervises one declared side process."""

    split_output = True
    whole_group = True

    def __init__(self, declaration: SideProcess, runtime_dir: str, settings: BarrelSettings,
                 log: Logger, uid: int | None = None, gid: int | None = None) -> None:
        shown = declaration.module or declaration.command[0]
        super().__init__(declaration.name, shown, list(declaration.args), runtime_dir, settings, log,
                         uid, gid)
        self.label = f"side process {declaration.name}"
        self.log_prefix = f"{declaration.name}: "
        self.declaration = declaration
        self.ready_timeout = declaration.ready_timeout

    def redeclare(self, declaration: SideProcess) -> None:
        """Use ``declaration`` from the next start on."""
        self.declaration = declaration
        self.module = declaration.module or declaration.command[0]
        self.args = list(declaration.args)
        self.ready_timeout = declaration.ready_timeout

    def command(self) -> list[str]:
        return lifeline.command_line(self.arbiter_pid, self.declaration.argv(sys.executable))

    def environment(self) -> dict[str, str]:
        env = super().environment()
        declared = self.declaration.env
        env.update(declared)
        if "PYTHONPATH" in declared:  # barrel stays importable (gunicorn_barrel.side)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [declared["PYTHONPATH"], PACKAGE_ROOT]))
        settings = self.settings
        env.update(side_env.environment(side_env.SideInstance(
            self.name, self.runtime_dir, self.arbiter_pid, settings.bus, settings.bus_namespace,
            settings.max_frame_size)))
        return env


def reload(running: list[SideProcessSupervisor], declared: Sequence[SideProcess],
           make: Callable[[SideProcess], UserSideProcess], log: Logger) -> None:
    """Apply a reloaded config's declarations to ``running`` (the arbiter's list, changed in place)."""
    wanted = {declaration.name: declaration for declaration in declared}
    for proc in [p for p in running if isinstance(p, UserSideProcess)]:
        new = wanted.pop(proc.name, None)
        if new is None:
            running.remove(proc)
            log.info("side process %s is no longer declared; stopping it", proc.name)
            proc.stop()
            continue
        changed = new.launch() != proc.declaration.launch()
        proc.redeclare(new)
        if changed:
            proc.restart("its changed declaration")
        elif new.on_reload == "restart":
            proc.restart("the reload (on_reload='restart')")
    for new in wanted.values():
        proc = make(new)
        try:
            proc.start()
        except (RuntimeError, OSError) as exc:
            log.error("side process %s did not start: %s", new.name, exc)
            proc.stop()
            continue
        running.append(proc)
