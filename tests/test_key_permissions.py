"""A federation secret key that other users may read is refused, with the fix in the message."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn_barrel.config.settings import SettingsError
from gunicorn_barrel.federation import keys


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o644])
def test_a_secret_key_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _public, secret = keys.generate(str(tmp_path), "a")
    os.chmod(secret, mode)
    with pytest.raises(keys.KeyFileError, match=f"mode {mode:#o}.*chmod 600 {secret}"):
        keys.load(str(tmp_path))
    # At config load, gunicorn stops with the setting's name and the reason.
    with pytest.raises(SettingsError, match="federation_keys.*open to group or others"):
        keys.check_settings(str(tmp_path), "")
    os.chmod(secret, 0o600)
    assert keys.load(str(tmp_path)).secret


def test_the_hub_refuses_a_readable_secret_key(tmp_path: Path) -> None:
    _public, secret = keys.generate(str(tmp_path), "hub")
    os.chmod(secret, 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn_barrel.federation.hub", "--keys", str(tmp_path),
         "--listen", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert "open to group or others" in done.stderr
