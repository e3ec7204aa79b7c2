"""Fixtures: one real TTS server subprocess for the session (espeak, a tiny random VITS, Piper)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import start_service

from voxline.cli.service_process import ServiceProcess
from voxline.tts.tiny_vits import build_tiny_vits
from voxline.v1 import tts_pb2_grpc

#: The server's text limit, small so the RESOURCE_EXHAUSTED test sends little.
MAX_TEXT_CHARS = 1000


@pytest.fixture(scope="session")
def tiny_vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised VITS model + char tokenizer saved with save_pretrained."""
    return build_tiny_vits(tmp_path_factory.mktemp("tiny-vits"))


@pytest.fixture(scope="session")
def tts_server(tiny_vits_dir: Path) -> Iterator[ServiceProcess]:
    """``python -m voxline.tts`` on a free port, SERVING (voices loaded and warm)."""
    args = ["--vits-models", str(tiny_vits_dir), "--max-text-chars", str(MAX_TEXT_CHARS)]
    with start_service("tts", args) as server:
        server.wait_serving()
        yield server
        assert server.stop() == 0, server.logs


@pytest.fixture(scope="session")
def tts_stub(tts_server: ServiceProcess) -> Iterator[tts_pb2_grpc.TextToSpeechStub]:
    with grpc.insecure_channel(tts_server.address) as channel:
        yield tts_pb2_grpc.TextToSpeechStub(channel)
