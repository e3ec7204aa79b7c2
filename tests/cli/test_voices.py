"""`voxline voices` against a real TTS service (espeak voices only, a subprocess on a free port)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from support import start_service

from voxline.cli.service_process import ServiceProcess
from voxline.cli.voices import format_voices
from voxline.v1 import tts_pb2


@pytest.fixture(scope="module")
def tts() -> Iterator[ServiceProcess]:
    with start_service("tts", []) as server:
        server.wait_serving()
        yield server
        assert server.stop() == 0, server.logs


def voxline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxline.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_lists_the_voices_of_a_running_tts_service(tts: ServiceProcess) -> None:
    done = voxline("voices", "--address", tts.address)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["voice", "language", "engine", "rate"]
    assert "(default)" in lines[2]
    assert ["espeak:fr", "fr", "espeak", "22050", "Hz"] in [line.split() for line in lines], done.stdout

    french = voxline("voices", "--address", tts.address, "--language", "fr")
    assert french.returncode == 0, french.stderr
    rows = [line.split() for line in french.stdout.splitlines()[2:-1]]
    assert rows == [["espeak:fr", "fr", "espeak", "22050", "Hz"]]


def test_formatting_marks_the_default_and_explains_an_unknown_language() -> None:
    voices = [tts_pb2.Voice(name="en", engine="espeak", language="en", sample_rate_hz=22050),
              tts_pb2.Voice(name="fr-ca", engine="espeak", language="fr-CA", sample_rate_hz=22050)]
    text = format_voices(voices, "fr")
    assert "fr-ca" in text and "en (default)" not in text
    assert format_voices(voices, "de") == "no voice for language 'de'; languages served: en, fr-CA"


async def test_wrong_port_and_nothing_listening_are_explained() -> None:
    server = grpc.aio.server()  # the orchestrator's port, say: health, but no TextToSpeech
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        done = await asyncio.to_thread(voxline, "voices", "--address", f"127.0.0.1:{port}")
    finally:
        await server.stop(0)
    assert done.returncode == 1
    assert "does not serve voxline.v1.TextToSpeech" in done.stderr and "127.0.0.1:50053" in done.stderr

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    done = voxline("voices", "--address", f"127.0.0.1:{free}", "--timeout", "5")
    assert done.returncode == 1
    assert f"cannot reach the TTS service at 127.0.0.1:{free}" in done.stderr
    assert "Traceback" not in done.stderr
