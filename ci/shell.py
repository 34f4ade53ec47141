"""What the CI scripts share: pyenv's Pythons, and running a command with its line shown.

Run the scripts as modules from the repository's root (``python -m ci.matrix``),
so that they and the tests that import them find this one.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def pyenv_root() -> Path:
    """Where pyenv keeps its Pythons: $PYENV_ROOT, else ``pyenv root``, else ~/.pyenv."""
    root = os.environ.get("PYENV_ROOT")
    if not root:
        try:
            found = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
            root = found.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            root = str(Path.home() / ".pyenv")
    return Path(root)


def run(cmd: list[str], **kwargs: object) -> None:
    """Run ``cmd``, showing it first; raise if it fails."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]
