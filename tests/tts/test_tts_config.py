"""Configuration and voice loading errors: clear messages, before any request is served."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voxline.common.config import ConfigError
from voxline.tts.config import TtsConfig, parse
from voxline.tts.espeak import EspeakVoice
from voxline.tts.vits import VitsVoice


def test_flags_override_env_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_TTS_ESPEAK_VOICES", "fr, en")
    monkeypatch.setenv("VOXLINE_TTS_DEFAULT_VOICE", "espeak:fr")
    config = parse(["--max-text-chars", "77", "--piper-voices", ""])
    assert config.espeak_voices == ("fr", "en")
    assert config.default_voice == "espeak:fr"
    assert config.piper_voices == ()
    assert config.max_text_chars == 77
    assert TtsConfig().default_voice == "espeak:en"


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"default_voice": "espeak:it"}, "--default-voice 'espeak:it' is not among"),
    ({"espeak_voices": (), "piper_voices": ()}, "no voice configured"),
    ({"vits_device": "tpu"}, "--vits-device"),
    ({"max_text_chars": 0}, "--max-text-chars"),
    ({"chunk_bytes": 1001}, "--chunk-bytes"),
])
def test_unusable_configuration_is_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TtsConfig(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_cli_help_and_bad_flag_exit_codes() -> None:
    shown = subprocess.run([sys.executable, "-m", "voxline.tts", "--help"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "--vits-models" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "voxline.tts", "--default-voice", "vits:nope"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--default-voice 'vits:nope' is not among the configured voices" in refused.stderr


def test_unknown_espeak_voice_fails_at_load() -> None:
    with pytest.raises(ValueError, match="espeak-ng has no voice 'no-such-voice'"):
        EspeakVoice("no-such-voice")


def test_vits_model_that_is_not_there_fails_clearly(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="cannot load VITS model '/nonexistent/model'"):
        VitsVoice.load("/nonexistent/model")
    # A hub id without downloads allowed is looked up in the local cache only, never fetched.
    with pytest.raises(ValueError, match="downloads are off"):
        VitsVoice.load("voxline-tests/no-such-mms-model")
