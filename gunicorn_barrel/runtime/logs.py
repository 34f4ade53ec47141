"""Barrel's log records go where gunicorn's go: its error log, with its format, level and pids.

- Arbiter and workers: ``follow_gunicorn`` hands the records of the
  ``gunicorn_barrel`` loggers to gunicorn's error logger (its handlers, format
  and level); the arbiter's hooks call it at start, on HUP and in each worker.
- Side processes (broadcaster, embedded store), exec'd by the supervisor:
  ``side_process_logging`` writes each record as one JSON line on stderr, a
  pipe the supervisor reads in the arbiter; ``relay`` gives each record to
  gunicorn's error logger with the side process's time and pid. Lines that
  are not such records (a crash's traceback) are relayed as errors. Run by
  hand, a side process prints gunicorn's format on stderr instead.
- Side processes of the user's own: the same, each line prefixed with the
  process's name; lines that are not records are INFO from stdout, ERROR
  from stderr (a Python one gets levels by calling ``side_process_logging``).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

ROOT = "gunicorn_barrel"
# gunicorn's own error-log format (gunicorn.glogging.Logger.error_fmt, datefmt).
FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATEFMT = "[%Y-%m-%d %H:%M:%S %z]"
# Set by the supervisor in a side process's environment: the level to log at,
# and that records go to it as JSON lines.
LEVEL_ENV = "GUNICORN_BARREL_LOG_LEVEL"
_MARK = "barrel_log"


def error_logger(glog: Any) -> logging.Logger | None:
    """gunicorn's error logger behind a gunicorn ``Logger`` (None for a logger_class without one)."""
    target = getattr(glog, "error_log", None)
    return target if isinstance(target, logging.Logger) else None


class _ToGunicorn(logging.Handler):
    """Hands records to gunicorn's error logger: its handlers and format apply."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if self.target.isEnabledFor(record.levelno):
            self.target.handle(record)


def follow_gunicorn(glog: Any) -> None:
    """Route this process's ``gunicorn_barrel.*`` records through gunicorn's error log, at its level.

    Left alone: a ``gunicorn_barrel`` logger the user configured (logconfig) and
    a logger_class that has no gunicorn error logger.
    """
    target = error_logger(glog)
    if target is None:
        return
    barrel = logging.getLogger(ROOT)
    ours = [h for h in barrel.handlers if isinstance(h, _ToGunicorn)]
    if len(ours) != len(barrel.handlers):
        return
    for handler in ours:
        barrel.removeHandler(handler)
    barrel.addHandler(_ToGunicorn(target))
    barrel.setLevel(target.getEffectiveLevel())
    barrel.propagate = False  # gunicorn's logger propagates (or not) as configured


def side_process_env(glog: Any) -> dict[str, str]:
    """The environment entries that make a side process log for ``relay``."""
    target = error_logger(glog)
    return {LEVEL_ENV: str(target.getEffectiveLevel() if target is not None else logging.INFO)}


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps({_MARK: 1, "level": record.levelno, "time": record.created,
                           "name": record.name, "message": message})


def side_process_logging() -> None:
    """Set up logging in a side process (call first in its ``main``)."""
    level = os.environ.get(LEVEL_ENV, "")
    handler = logging.StreamHandler(sys.stderr)
    if level.isdigit():
        handler.setFormatter(_JsonLines())
    else:
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(int(level) if level.isdigit() else logging.INFO)
    logging.captureWarnings(True)  # Python warnings become records too


def side_record(line: bytes, pid: int, plain_level: int = logging.ERROR,
                prefix: str = "") -> logging.LogRecord | None:
    """The record of one line a side process wrote (None for a blank line).

    A line that is not one of ``side_process_logging``'s records gets ``plain_level``;
    ``prefix`` goes before every message (a user side process's name).
    """
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if not text.strip():
        return None
    data: Any = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    fields = _fields(data)
    if fields is None:  # not one of our records: a traceback, a print
        fields = (plain_level, time.time(), ROOT + ".side", text)
    level, created, name, message = fields
    return logging.makeLogRecord({
        "name": name, "levelno": level, "levelname": logging.getLevelName(level),
        "msg": prefix + message, "args": None, "created": created,
        "msecs": (created - int(created)) * 1000, "process": pid,
    })


def _fields(data: Any) -> tuple[int, float, str, str] | None:
    if not isinstance(data, dict) or data.get(_MARK) != 1:
        return None
    level, created, name, message = data.get("level"), data.get("time"), data.get("name"), data.get("message")
    if (isinstance(level, int) and isinstance(created, (int, float)) and isinstance(name, str)
            and isinstance(message, str)):
        return level, float(created), name, message
    return None


def relay(stream: IO[bytes], pid: int, glog: Any, plain_level: int = logging.ERROR,
          prefix: str = "") -> None:
    """Give every line side process ``pid`` writes to gunicorn's error logger, until it closes the pipe
    (``plain_level``, ``prefix``: see ``side_record``). The caller closes ``stream``."""
    target = error_logger(glog)
    if target is None:  # a logger_class without one: print in gunicorn's format
        target = logging.getLogger(ROOT + ".side")
        if not target.handlers:
            fallback = logging.StreamHandler(sys.stderr)
            fallback.setFormatter(logging.Formatter(FORMAT, DATEFMT))
            target.addHandler(fallback)
            target.setLevel(logging.INFO)
            target.propagate = False
    for line in stream:
        record = side_record(line, pid, plain_level, prefix)
        if record is not None and target.isEnabledFor(record.levelno):
            target.handle(record)
