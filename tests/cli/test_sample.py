"""`voxline sample` writes the spoken question the README's examples use, with a real TTS service
(a subprocess on a free port)."""

from __future__ import annotations

import socket
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import start_service

from voxline.cli.service_process import ServiceProcess


@pytest.fixture(scope="module")
def tts() -> Iterator[ServiceProcess]:
    with start_service("tts", []) as server:
        server.wait_serving()
        yield server


def voxline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxline.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_writes_a_spoken_question_as_a_wav_file(tts: ServiceProcess, tmp_path: Path) -> None:
    out = tmp_path / "question.wav"
    done = voxline("sample", "-o", str(out), "--address", tts.address)
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    assert 1.0 < seconds < 10.0
    assert done.stdout.startswith(f"{out}: 'What is the capital of France?', ")
    assert done.stdout.rstrip().endswith("voice piper:joe")  # the most natural English voice served


def test_no_tts_service_is_one_line_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = voxline("sample", "-o", str(tmp_path / "q.wav"), "--address", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.startswith(f"voxline sample: TTS service at 127.0.0.1:{port}: UNAVAILABLE")
    assert "voxline up" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "q.wav").exists()
