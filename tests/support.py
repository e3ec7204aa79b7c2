"""Test support: run a voxline service as a real subprocess on a free port and wait until healthy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
_PORT_RE = re.compile(r"\blistening\b.*\bport=(\d+)")


class ServiceProcess:
    """``python -m voxline.<stage> --port 0 ...`` with its stderr captured and its port parsed."""

    def __init__(self, stage: str, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.stage = stage
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"voxline.{stage}", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT,
        )
        self.lines: list[str] = []
        self._port: int | None = None
        self._port_seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _PORT_RE.search(line)
            if match and self._port is None:
                self._port = int(match.group(1))
                self._port_seen.set()
        self._port_seen.set()

    @property
    def logs(self) -> str:
        return "\n".join(self.lines)

    @property
    def port(self) -> int:
        if not self._port_seen.wait(120) or self._port is None:
            raise RuntimeError(f"{self.stage} never reported its port:\n{self.logs}")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "") -> int:
        """The health status (health_pb2.HealthCheckResponse.ServingStatus value)."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_serving(self, timeout: float = 180.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.stage} exited with {self.proc.returncode}:\n{self.logs}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.stage} not SERVING after {timeout}s:\n{self.logs}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
