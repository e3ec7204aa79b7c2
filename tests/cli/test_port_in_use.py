"""A port already in use is one clear line, not a gRPC traceback, and `voxline up` says so before
starting anything (rather than starting three services and stopping them again)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_service_on_a_busy_port_exits_2_with_one_line(busy_port: int) -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.tts", "--port", str(busy_port),
                           ],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert f"cannot start: cannot listen on 127.0.0.1:{busy_port}: the port is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_checks_its_ports_before_starting_anything(busy_port: int, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.cli", "up", "--base-port", "0",
                           "--tts-port", str(busy_port), "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"already in use on 127.0.0.1: port {busy_port} (tts)" in done.stderr
    assert f"--tts-port {busy_port + 10}" in done.stderr
    assert "starting stt" not in done.stderr and "Traceback" not in done.stderr
