"""One supervised voxline service process: its output, its bound port, its health, its stop.

The one class for it: ``voxline up`` / ``demo`` (through ``Stack``), the bench and the tests all
start services with ``ServiceProcess``. The port comes from ``--port-file`` (the service writes
the bound port there, see ``voxline.common.server.write_port_file``), the metrics port likewise
from ``--metrics-port-file``, so port 0 works and no log line is parsed.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from signal import SIGTERM

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.common.server import read_port_file

STARTING, LOADING, SERVING, EXITED = "starting", "loading", "serving", "exited"


class StackError(RuntimeError):
    """A service or the stack could not be started."""


class ServiceFailed(StackError):
    """A service exited on its own; carries its last log lines."""

    def __init__(self, stage: str, returncode: int | None, tail: Sequence[str],
                 log_path: Path | None) -> None:
        self.stage = stage
        self.returncode = returncode
        self.tail = list(tail)
        self.log_path = log_path
        where = f" (log: {log_path})" if log_path is not None else ""
        super().__init__(f"{stage} exited with status {returncode}{where}")


class ServiceProcess:
    """``argv`` (a voxline service taking ``--port-file``) as a child process.

    Its output (stdout and stderr together) goes to ``log_path`` when given and to ``lines``, the
    last ``keep_lines`` of it (None: all; ``append_log``: after what a previous run of the same
    service wrote, as a restart does). The child runs in its own process group, so a Ctrl-C in
    the terminal reaches only the supervisor, which stops children in order.
    """

    def __init__(self, stage: str, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                 log_path: Path | None = None, keep_lines: int | None = 40,
                 cwd: Path | None = None, append_log: bool = False) -> None:
        self.stage = stage
        self.argv = list(argv)
        self.env = dict(env or {})
        self.log_path = log_path
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.state = STARTING
        self.state_since = self.started_at = time.monotonic()
        self._port: int | None = None
        self._port_dir = Path(tempfile.mkdtemp(prefix=f"voxline-{stage}-"))
        self._port_file = self._port_dir / "port"
        self._metrics_port_file = self._port_dir / "metrics-port"
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        mode = "a" if append_log else "w"
        self._log = open(log_path, mode, encoding="utf-8", buffering=1) if log_path else None
        try:
            self.proc = subprocess.Popen(
                [*argv, "--port-file", str(self._port_file),
                 "--metrics-port-file", str(self._metrics_port_file)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, text=True,
                errors="replace", process_group=0,
            )
        except OSError as exc:
            self._cleanup()
            raise StackError(f"cannot start {stage} ({' '.join(argv[:3])}): {exc}") from exc
        self._reader = threading.Thread(target=self._read, name=f"{stage}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                if self._log is not None:
                    self._log.write(line)
                self.lines.append(line.rstrip("\n"))
        finally:
            if self._log is not None:
                self._log.close()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._port_dir, ignore_errors=True)

    @property
    def logs(self) -> str:
        """The output kept so far, one string."""
        return "\n".join(list(self.lines))

    # -- port and health ---------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        """The bound port, or None until the service has written its port file."""
        if self._port is None:
            self._port = read_port_file(self._port_file)
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The Prometheus endpoint's port once the service is up (it writes the file before its
        port file); None when it serves no metrics endpoint (no ``--metrics-port``)."""
        return read_port_file(self._metrics_port_file)

    def wait_port(self, timeout: float = 120.0) -> int:
        """Block until the port is known; RuntimeError if the service exits or takes too long."""
        deadline = time.monotonic() + timeout
        while (port := self.port) is None:
            if not self.alive():
                raise self.failure()
            if time.monotonic() > deadline:
                raise StackError(f"{self.stage} did not report its port within {timeout:g} s:\n{self.logs}")
            time.sleep(0.05)  # polling a file the child writes once: no event to wait on
        return port

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (waits for the port)."""
        return f"127.0.0.1:{self.wait_port()}"

    def health(self, service: str = "") -> int:
        """The health status (health_pb2.HealthCheckResponse.ServingStatus value)."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)

    def wait_serving(self, timeout: float = 180.0) -> ServiceProcess:
        """Block until the health check says SERVING; ServiceFailed if it exits first."""
        deadline = time.monotonic() + timeout
        self.wait_port(timeout)
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.failure()
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    self.set_state(SERVING)
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise StackError(f"{self.stage} not SERVING after {timeout:g} s:\n{self.logs}")

    # -- lifecycle ---------------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> ServiceFailed:
        """The ServiceFailed of a child that exited."""
        self._reader.join(2)  # let the last lines reach ``lines``
        return ServiceFailed(self.stage, self.proc.returncode, list(self.lines), self.log_path)

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def join_reader(self) -> None:
        self._reader.join(5)
        shutil.rmtree(self._port_dir, ignore_errors=True)

    def stop(self, sig: int = SIGTERM, timeout: float = 30.0) -> int:
        """Signal the child, wait (then kill after ``timeout``); its exit status."""
        self.signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.join_reader()
        self.set_state(EXITED)
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
