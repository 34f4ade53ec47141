"""Run one of tests/browser/*.mjs (playwright-core driving headless Chromium) and read its result.

Each script prints JSON lines and ends with ``{"type": "result", ...}`` (exit 0)
or ``{"type": "error", ...}`` (exit 1). What a browser test needs is checked
first: a missing piece fails the test (never skips) and says how to install it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO

NODE = shutil.which("node")
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PLAYWRIGHT = REPO / "node_modules" / "playwright-core"
ARTIFACTS = REPO / "test-artifacts"


def prerequisites(files: dict[Path, str]) -> list[str]:
    """What a browser test needs and does not find (empty: all there); ``files``: more files it
    needs, each with what to say when it is missing."""
    missing = []
    if NODE is None:
        missing.append("`node` on PATH (Node.js 18 or later)")
    if not (PLAYWRIGHT / "package.json").is_file():
        missing.append(f"{PLAYWRIGHT} (run `npm ci` in {REPO})")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (`apt-get install chromium`, as `make test-tools` does; "
                       "or set CHROMIUM to another Chromium binary)")
    missing += [why for path, why in files.items() if not path.is_file()]
    return missing


def run_script(name: str, args: list[str], timeout: float, files: dict[Path, str]) -> dict[str, Any]:
    """tests/browser/<name>.mjs with ``args``: its JSON result, or an AssertionError saying why not."""
    missing = prerequisites(files)
    if missing:
        pytest.fail(f"the {name} browser test cannot run; missing: " + "; ".join(missing), pytrace=False)
    assert NODE is not None
    ARTIFACTS.mkdir(exist_ok=True)
    stderr_path = ARTIFACTS / f"{name}-node.stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [NODE, str(REPO / "tests" / "browser" / f"{name}.mjs"), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        )
    try:
        out, _ = proc.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"node did not finish within {timeout + 30} s (stderr: {stderr_path})") from None
    finally:
        if proc.poll() is None:
            # SIGTERM first: playwright then closes the Chromium it launched.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    stderr_text = stderr_path.read_text(errors="replace").strip()[-3000:]
    assert lines, (f"node printed no result (exit {proc.returncode}); "
                   f"stdout: {out[-2000:]!r}; stderr: {stderr_text}")
    result: dict[str, Any] = json.loads(lines[-1])
    (ARTIFACTS / f"{name}-result.json").write_text(json.dumps(result, indent=1))
    assert result.get("type") == "result" and proc.returncode == 0, (
        f"browser check failed (exit {proc.returncode}): {json.dumps(result)[:4000]}\nstderr: {stderr_text}"
    )
    return result
