"""Compatibility matrix: representative tests against the oldest and the newest supported versions.

Each cell is a Python of the range setup.cfg declares (taken from pyenv) and a
pip constraints file (ci/constraints-*.txt). A cell's virtualenv is built from
the project's own files: the project installed editable from this checkout
with its install_requires and its ``test`` extra, under the cell's pins. It is
kept in a cache folder, named after a hash of everything that went into it, so
a second run only points the editable install at this checkout again.

    python ci/matrix.py                  # every cell
    python ci/matrix.py oldest-py3.11    # one cell
    python ci/matrix.py oldest-py3.11 -- tests/test_call_args.py -x   # other pytest arguments

Environment: BARREL_MATRIX_CACHE (default ~/.cache/gunicorn-barrel-matrix),
PYENV_ROOT (default: ``pyenv root``, else ~/.pyenv). Exits non-zero when a
cell cannot be built or any of its tests fails.
"""
from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ci.shell import pyenv_root, run

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BARREL_MATRIX_CACHE", Path.home() / ".cache" / "gunicorn-barrel-matrix"))

# The representative part of the suite, one file per area the matrix must
# cover: cross-worker socket.io operations (emits, rooms, acks, argument
# shapes; with and without --preload), long-polling routing, the WebSocket
# worker and engine.io's heartbeat, worker lifecycle under gunicorn's signals
# (HUP, USR2, TERM, max-requests restarts, side-process restarts), emit/call
# argument shapes against plain python-socketio, the cluster
# API and connection state recovery (built on python-socketio's CONNECT and
# disconnect handling); and every tests/test_compat*.py (the checks of
# patched library internals).
TESTS = [
    "tests/test_cross_worker.py",
    "tests/test_polling.py",
    "tests/test_websocket_worker.py",
    "tests/test_lifecycle.py",
    "tests/test_call_args.py",
    "tests/test_cluster.py",
    "tests/test_recovery.py",
]
# Slow tests of the project's own code that no library version changes (the
# WebSocket frame parser and deflate, request checks, the bus wire, the
# arbiter lifeline, the store's durability): `make test` runs them once.
DESELECTED = [
    "test_bad_frames_get_their_close_code_and_cost_the_others_nothing",
    "test_deflate_is_refused_by_default",
    "test_deflate_compresses_large_messages_only",
    "test_hostile_requests_get_400_and_cost_the_owner_nothing",
    "test_worker_restarts_keep_routing_for_sessions_of_workers_that_stayed",
    "test_rogue_frames_on_the_ipc_socket_are_refused",
    "test_arbiter_sigkilled_leaves_no_barrel_process",
    "test_store_sigkilled_during_writes_loses_no_acknowledged_write",
    "test_store_outlives_gunicorn",
]


def selection() -> list[str]:
    """pytest arguments of the representative part."""
    compat = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_compat*.py"))
    return [*TESTS, *compat, "-k", " and ".join(f"not {name}" for name in DESELECTED)]


# Test extras a cell does without: lint tools (run once by `make lint`) and
# atheris (`make fuzz`), which has no wheel for every Python.
SKIPPED_EXTRAS = {"atheris", "ruff", "mypy"}

# Raise to rebuild every cell's virtualenv (when venv_for changes how it builds).
BUILD_RECIPE = 1

# The libraries whose range the cells pin; each is checked after install.
PINNED = ["gunicorn", "gevent", "pyzmq", "python-socketio", "python-engineio",
          "simple-websocket", "msgpack"]


@dataclass(frozen=True)
class Cell:
    versions: str  # "oldest" or "newest": ci/constraints-<versions>.txt
    python: str  # "3.11"

    @property
    def name(self) -> str:
        return f"{self.versions}-py{self.python}"

    @property
    def constraints(self) -> Path:
        return REPO / "ci" / f"constraints-{self.versions}.txt"


# The oldest Python setup.cfg declares with the oldest versions of the
# libraries, the newest Python with the newest. (`make test` runs the whole
# suite on the main interpreter with the newest. pyzmq 26.0 ships no wheel for
# Python 3.13, so the oldest pins go with the oldest Python only.)
CELLS = [Cell("oldest", "3.11"), Cell("newest", "3.13")]


def requirements() -> list[str]:
    """install_requires and the test extra of setup.cfg, less SKIPPED_EXTRAS."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines() + \
        cfg["options.extras_require"]["test"].splitlines()
    reqs = [line.strip() for line in lines if line.strip()]
    return [r for r in reqs if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() not in SKIPPED_EXTRAS]


def pins(path: Path) -> dict[str, str]:
    """name -> version of the ``name==version`` lines of a constraints file."""
    found = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*(\S+)\s*(#.*)?", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def interpreter(version: str) -> Path:
    """The newest pyenv-installed CPython of a minor version ("3.11" -> .../3.11.7/bin/python)."""
    root = pyenv_root()
    candidates = [p for p in (root / "versions").glob(f"{version}.*")
                  if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name) and (p / "bin" / "python").exists()]
    if not candidates:
        raise SystemExit(f"matrix: no Python {version} under {root}/versions (pyenv install {version})")
    best = max(candidates, key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return best / "bin" / "python"


def venv_for(cell: Cell, python: Path, reqs: list[str]) -> Path:
    """The cell's virtualenv, built if the cache has none for these inputs."""
    key = hashlib.sha256("\n".join([
        str(BUILD_RECIPE), str(python.resolve()), cell.constraints.read_text(), *reqs,
    ]).encode()).hexdigest()[:12]
    venv = CACHE / f"{cell.name}-{key}"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        for stale in CACHE.glob(f"{cell.name}-*"):  # older builds of this cell
            shutil.rmtree(stale, ignore_errors=True)
        run([str(python), "-m", "venv", str(venv)])
        run([*pip, "install", "-q", "--upgrade", "pip", "setuptools>=64", "wheel"])
        run([*pip, "install", "-q", "-c", str(cell.constraints), "--no-build-isolation",
             "-e", str(REPO), *reqs])
        (venv / ".complete").touch()
    else:
        # The cache may come from another checkout: point the editable install here.
        run([*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)])
    return venv


def check_pins(cell: Cell, venv: Path) -> str:
    """The installed versions of PINNED, after checking they are the constraints file's."""
    want = pins(cell.constraints)
    code = ("import importlib.metadata as m, sys\n"
            "print(' '.join(m.version(n) for n in sys.argv[1:]))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code, *PINNED],
                         capture_output=True, text=True, check=True).stdout.split()
    got = dict(zip(PINNED, out, strict=True))
    wrong = [f"{n} {got[n]} (pinned {want[n]})" for n in PINNED if n in want and got[n] != want[n]]
    if wrong:
        raise SystemExit(f"matrix: {cell.name} installed other versions than its pins: {', '.join(wrong)}")
    return " ".join(f"{n}=={v}" for n, v in got.items())


@dataclass
class Result:
    cell: Cell
    versions: str = "-"
    build_s: float = 0.0
    test_s: float = 0.0
    exit_code: int = 1
    counts: dict[str, int] = field(default_factory=dict)  # passed, failed, skipped

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.counts.get("passed", 0) > 0


def junit_counts(path: Path) -> dict[str, int]:
    """passed/failed/skipped of a pytest --junit-xml report (all failed if there is none)."""
    try:
        suites = ElementTree.parse(path).getroot().iter("testsuite")
    except (OSError, ElementTree.ParseError):
        return {}
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    failed = total["failures"] + total["errors"]
    return {"passed": total["tests"] - failed - total["skipped"], "failed": failed,
            "skipped": total["skipped"]}


def run_cell(cell: Cell, reqs: list[str], tests: list[str]) -> Result:
    """Build (or reuse) the cell's virtualenv and run pytest in it."""
    result = Result(cell)
    start = time.monotonic()
    python = interpreter(cell.python)
    try:
        venv = venv_for(cell, python, reqs)
        result.versions = check_pins(cell, venv)
    except subprocess.CalledProcessError as exc:
        print(f"matrix: {cell.name}: building the virtualenv failed: {exc}", flush=True)
        result.build_s = time.monotonic() - start
        return result
    built = time.monotonic()
    result.build_s = built - start
    print(f"matrix: {cell.name}: Python {python.parent.parent.name}, {result.versions}", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="barrel-matrix-") as tmp:
        report = Path(tmp) / "junit.xml"
        result.exit_code = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q",
             f"--junit-xml={report}", *tests], cwd=REPO, env=env,
        ).returncode
        result.counts = junit_counts(report)
    result.test_s = time.monotonic() - built
    if not result.ok:
        print(f"matrix: {cell.name}: pytest exited with {result.exit_code}", flush=True)
    return result


def main(argv: list[str]) -> int:
    names, tests = argv, selection()
    if "--" in argv:
        names, tests = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    chosen = [c for c in CELLS if not names or c.name in names]
    if not chosen:
        print(f"matrix: no cell named {' '.join(names)}; cells: {' '.join(c.name for c in CELLS)}")
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    reqs = requirements()
    started = time.monotonic()
    results = [run_cell(cell, reqs, tests) for cell in chosen]
    print(f"\nmatrix summary ({time.monotonic() - started:.0f} s; build = virtualenv build or refresh)")
    for r in results:
        counts = ", ".join(f"{v} {k}" for k, v in r.counts.items()) or "no report"
        print(f"  {r.cell.name:16} {'PASS' if r.ok else 'FAIL'}  build {r.build_s:5.0f} s  "
              f"tests {r.test_s:5.0f} s  ({counts})  {r.versions}")
    passed, skipped = (sum(r.counts.get(k, 0) for r in results) for k in ("passed", "skipped"))
    # A cell that failed with no failed test (no virtualenv, no report) counts as one failure.
    failed = sum(r.counts.get("failed", 0) or (not r.ok) for r in results)
    print(f"matrix: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
