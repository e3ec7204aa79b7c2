"""Flags take precedence over VOXLINE_* env vars, which take precedence over defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from voxline.common.config import (
    ConfigError,
    add_server_options,
    describe,
    option,
    server_config_from_args,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_server_options(parser, "stt")
    option(parser, "--vad", env="VOXLINE_STT_VAD", default=False, type=bool, help="vad")
    return parser


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXLINE_STT_PORT", raising=False)
    config = server_config_from_args(_parser().parse_args([]))
    assert config.port == 50051
    assert config.host == "127.0.0.1"
    assert config.max_message_bytes == 32 * 1024 * 1024


def test_env_then_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_STT_PORT", "6000")
    monkeypatch.setenv("VOXLINE_STT_VAD", "yes")
    ns = _parser().parse_args([])
    assert ns.port == 6000
    assert ns.vad is True
    assert _parser().parse_args(["--port", "7000", "--vad", "false"]).port == 7000
    assert _parser().parse_args(["--vad", "false"]).vad is False


def test_bad_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_STT_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="VOXLINE_STT_PORT='not-a-port' is invalid"):
        _parser()


def test_out_of_range_port() -> None:
    with pytest.raises(ConfigError, match="--port must be"):
        server_config_from_args(_parser().parse_args(["--port", "70000"]))


def test_help_shows_env_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "VOXLINE_STT_PORT" in out
    assert "default: 50051" in out


def test_describe_masks_secrets() -> None:
    @dataclass(frozen=True)
    class Cfg:
        model: str = "base"
        groq_api_key: str = "gsk_supersecret"
        empty_token: str = ""

    line = describe(Cfg())
    assert "gsk_supersecret" not in line
    assert "groq_api_key=***" in line
    assert "empty_token=<unset>" in line
    assert "model='base'" in line
