"""`voxline --help` and every command's --help (no model loaded, no service needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voxline.cli.main import main

VOXLINE = Path(sys.executable).with_name("voxline")


def test_the_console_script_lists_the_commands() -> None:
    assert VOXLINE.exists(), "the voxline entry point is not installed (pip install -e services/orchestrator)"
    done = subprocess.run([str(VOXLINE), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("up", "talk", "demo", "voices", "report"):
        assert f"\n    {command} " in done.stdout


@pytest.mark.parametrize(("command", "expected"), [
    ("up", ["--base-port", "--stt-port", "--orchestrator-port", "--log-dir", "--span-file",
            "--llm-providers", "--voice", "--language", "SIGTERM", "--viewer", "Arize Phoenix",
            "--edge-port", "--no-edge"]),
    ("talk", ["--address", "127.0.0.1:50050", "--text", "--rate", "--channels", "-o OUTPUT"]),
    ("demo", ["--turns", "--target-ms", "--span-file", "time to first audio"]),
    ("report", ["SPANFILE", "--png", "--turn"]),
    ("voices", ["--address", "127.0.0.1:50053", "--language", "--tls-ca"]),
])
def test_each_command_has_help(command: str, expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for fragment in expected:
        assert fragment in text, f"{fragment!r} missing from `voxline {command} --help`"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
