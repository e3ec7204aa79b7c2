"""`make setup` notices a voxline package installed as a copy (it ignores edits to the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "editable_check.py"


def run_check(extra_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:  # first on the path, as site-packages holds a copy after `pip install ./x`
        env["PYTHONPATH"] = extra_path
    return subprocess.run([sys.executable, str(CHECK), str(ROOT / "services")], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_checkout_installed_editable_passes() -> None:
    done = run_check()
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_installed_copy_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "voxline" / "orchestrator"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    done = run_check(str(tmp_path))
    assert done.returncode == 1
    assert "voxline.orchestrator" in done.stdout and str(tmp_path) in done.stdout
    assert "voxline.stt" not in done.stdout
