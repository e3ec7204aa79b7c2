"""`python -m voxline.tts --vits-models /models/mms-tts-fra` (the README's example) on a machine
without that directory: one clear line and exit 2, not a traceback after loading other voices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voxline.common.config import ConfigError
from voxline.tts.config import TtsConfig


def test_a_missing_model_directory_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.tts", "--vits-models", "/models/mms-tts-fra",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--vits-models '/models/mms-tts-fra': directory not found" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= 3


def test_paths_are_checked_hub_ids_are_not(tmp_path: Path) -> None:
    for missing in ("./no-model", "../no-model", str(tmp_path / "absent"), "~/no-such-voxline-model"):
        with pytest.raises(ConfigError, match="directory not found"):
            TtsConfig(vits_models=(missing,))
    assert TtsConfig(vits_models=(str(tmp_path),)).vits_models == (str(tmp_path),)
    # A hub id is resolved by the loader (local cache, or a download when allowed).
    assert TtsConfig(vits_models=("facebook/mms-tts-fra",)).vits_models == ("facebook/mms-tts-fra",)
