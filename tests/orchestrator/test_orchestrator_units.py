"""The orchestrator's flags and env vars."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voxline.common.config import ConfigError
from voxline.orchestrator.config import parse


def test_config_flags_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_ORCHESTRATOR_LLM", "10.0.0.5:6000")
    monkeypatch.setenv("VOXLINE_ORCHESTRATOR_TTS_DEADLINE", "7.5")
    config = parse(["--stt", "stt:1234", "--port", "0"])
    assert config.stt_address == "stt:1234" and config.llm_address == "10.0.0.5:6000"
    assert config.tts_address == "127.0.0.1:50053"
    assert config.deadlines.tts_s == 7.5 and config.server.port == 0
    with pytest.raises(ConfigError, match="--tts must be host:port"):
        parse(["--tts", "nowhere"])
    with pytest.raises(ConfigError, match="llm_ttft_s must be > 0"):
        parse(["--llm-first-token-deadline", "0"])


def test_help_works_without_any_service() -> None:
    out = subprocess.run([sys.executable, "-m", "voxline.orchestrator", "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    for flag in ("--stt", "--llm", "--tts", "--llm-first-token-deadline", "--vad-silence-ms",
                 "VOXLINE_ORCHESTRATOR_STT"):
        assert flag in out
