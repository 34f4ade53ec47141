"""Side processes' command lines, generated from the settings' declarations.

The arbiter starts a side process (``settings.BROADCASTER``,
``settings.STORE_SERVER``) with ``command_line()``, and the side process reads
it with ``parser()``: a setting's flag (``--max-frame-size`` for
``max_frame_size``), its validation and its help come from its declaration
(``settings.SETTINGS``, ``Setting.side_processes``) and nowhere else. The
standalone hub takes some settings too (``add_settings``).
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Iterable
from typing import Any

from gunicorn_barrel.config.settings import SETTINGS, BarrelSettings, Setting, declared

_FIRST_SENTENCE = re.compile(r"(?<=[\w)])\.(?: |$)")


def flag(name: str, drop_prefix: str = "") -> str:
    """The command-line flag of setting ``name``."""
    return "--" + name.removeprefix(drop_prefix).replace("_", "-")


def side_settings(process: str) -> list[Setting]:
    """The settings side process ``process`` takes, in declaration order."""
    return [setting for setting in SETTINGS if process in setting.side_processes]


def instance_args(runtime_dir: str, parent_pid: int) -> list[str]:
    """What every side process is told of its instance: the runtime directory and the arbiter."""
    return ["--runtime-dir", runtime_dir, "--parent-pid", str(parent_pid)]


def command_line(values: BarrelSettings, process: str) -> list[str]:
    """The settings part of side process ``process``'s command line (``--name=value``: a
    value that starts with a dash stays a value)."""
    return [f"{flag(setting.name)}={getattr(values, setting.name)}" for setting in side_settings(process)]


def parser(prog: str, process: str) -> argparse.ArgumentParser:
    """The parser of a side process the arbiter starts: ``instance_args`` and its settings."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    names = [setting.name for setting in side_settings(process)]
    add_settings(parser, names, required=names)
    return parser


def add_settings(parser: argparse.ArgumentParser, names: Iterable[str], drop_prefix: str = "",
                 required: Collection[str] = ()) -> None:
    """Add a flag per setting, parsed as the setting is, stored under the setting's name."""
    for name in names:
        setting = declared(name)
        needed = name in required
        help_text = _FIRST_SENTENCE.split(setting.doc)[0].replace("%", "%%")
        parser.add_argument(
            flag(name, drop_prefix), dest=name, metavar=name.removeprefix(drop_prefix).upper(),
            type=_argument_type(setting), required=needed, default=None if needed else setting.default(),
            help=help_text if needed else f"{help_text} (default: %(default)r)",
        )


def _argument_type(setting: Setting) -> Any:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse
