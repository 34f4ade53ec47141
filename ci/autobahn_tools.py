"""Autobahn|Testsuite's ``wstest`` in a cached Python 2.7 virtualenv (for tests/test_autobahn.py).

wstest 0.8.2, the last release, is Python 2 code. Its virtualenv is built
from the project's own files: pyenv's Python 2.7.18, virtualenv 16.7.12 (the
last one that runs on 2.7; Python 2 has no ``venv``) installed into the cache
folder itself, then ``ci/autobahn-requirements.txt``, where every package is
pinned. It is kept in a folder named after a hash of those inputs: editing
the requirements builds a new one (and removes the old), an unchanged file
reuses it.

    python ci/autobahn_tools.py      # build if needed; prints wstest's path

Environment: AUTOBAHN_CACHE (default ~/.cache/gunicorn-barrel-autobahn),
PYENV_ROOT (default: ``pyenv root``, else ~/.pyenv). Exits non-zero when the
virtualenv cannot be built or installs a package the file does not pin.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ci.shell import pyenv_root, run

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "ci" / "autobahn-requirements.txt"
CACHE = Path(os.environ.get("AUTOBAHN_CACHE", Path.home() / ".cache" / "gunicorn-barrel-autobahn"))
PYTHON2 = "2.7.18"
VIRTUALENV = "virtualenv==16.7.12"
PIP = "pip==20.3.4"  # the last pip for Python 2 (pip 21 dropped it)
# Raise to rebuild the virtualenv when build() changes how it builds.
BUILD_RECIPE = 1


def venv_dir() -> Path:
    """Where the virtualenv of the current inputs lives (built or not)."""
    key = hashlib.sha256("\n".join([
        str(BUILD_RECIPE), PYTHON2, VIRTUALENV, PIP, REQUIREMENTS.read_text(),
    ]).encode()).hexdigest()[:12]
    return CACHE / f"venv-{key}"


def wstest() -> Path | None:
    """wstest of a complete virtualenv of the current inputs, or None (then run this script)."""
    venv = venv_dir()
    return venv / "bin" / "wstest" if (venv / ".complete").exists() else None


def python2() -> Path:
    python = pyenv_root() / "versions" / PYTHON2 / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"autobahn-tools: no {python} (pyenv install {PYTHON2})")
    return python


def pins(text: str) -> dict[str, str]:
    """lowercased name -> version of the ``name==version`` lines (requirements or pip freeze)."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*(\S+)\s*(#.*)?", line)
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(2)
    return found


def build() -> Path:
    """Build the virtualenv unless the cache holds it; wstest's path."""
    venv = venv_dir()
    if (venv / ".complete").exists():
        return venv / "bin" / "wstest"
    python = python2()
    for stale in CACHE.glob("venv-*"):  # older builds, this one's unfinished attempt included
        shutil.rmtree(stale, ignore_errors=True)
    bootstrap = CACHE / "virtualenv"
    shutil.rmtree(bootstrap, ignore_errors=True)
    # pip warns about Python 2 on every call (pip 19.2 has no option against it, 20.x an env var).
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_PYTHON_VERSION_WARNING": "1"}
    env.pop("PYTHONPATH", None)
    run([str(python), "-m", "pip", "install", "-q",
         "--target", str(bootstrap), VIRTUALENV], env=env)
    run([str(python), "-m", "virtualenv", "-q", "--no-download", str(venv)],
        env={**env, "PYTHONPATH": str(bootstrap)})
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    run([*pip, "install", "-q", PIP], env=env)
    run([*pip, "install", "-q", "-r", str(REQUIREMENTS)], env=env)
    frozen = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True, env=env).stdout
    wanted, got = pins(REQUIREMENTS.read_text()), pins(frozen)
    unpinned = sorted(f"{n}=={v}" for n, v in got.items() if wanted.get(n) != v)
    if unpinned:
        raise SystemExit(f"autobahn-tools: installed without a pin in {REQUIREMENTS.name}: "
                         f"{', '.join(unpinned)}")
    run([str(venv / "bin" / "wstest"), "--autobahnversion"], env=env)
    shutil.rmtree(bootstrap, ignore_errors=True)
    (venv / ".complete").touch()
    return venv / "bin" / "wstest"


if __name__ == "__main__":
    try:
        print(build())
    except subprocess.CalledProcessError as exc:
        sys.exit(f"autobahn-tools: building the virtualenv failed: {exc}")
