"""A local trace viewer for ``voxline up --viewer``: Arize Phoenix, started as a child process.

Phoenix installs from PyPI (``make viewer``: the orchestrator's ``viewer`` extra, editable),
needs no Docker, receives OTLP on a gRPC port and shows each turn as one trace with its span kinds,
events and, when content capture is on, the transcript and reply. It is found in this Python
environment (``python -m phoenix.server.main``) or as a ``phoenix`` command on PATH (an install in
its own virtual environment). Its data lives in ``--viewer-dir`` so traces survive a restart.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = ('`make viewer` in the checkout (Arize Phoenix into .venv, keeping the services editable; '
                'elsewhere: pip install -c constraints.txt -e "./services/orchestrator[viewer]"), '
                "or put a `phoenix` command on PATH")
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# Run the command with SIGTERM as its parent-death signal (kept across exec), so the viewer never
# outlives a `voxline up` that was killed. No preexec_fn: this process runs gRPC threads.
_EXEC_WITH_PDEATHSIG = ("import ctypes, os, signal, sys; "
                        "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
                        "os.execvp(sys.argv[1], sys.argv[1:])")


class ViewerError(RuntimeError):
    """The viewer is not installed, or did not start."""


def phoenix_command() -> list[str]:
    """How to run Phoenix here; ViewerError with the install hint when it is nowhere."""
    if importlib.util.find_spec("phoenix") is not None:
        return [sys.executable, "-m", "phoenix.server.main", "serve"]
    found = shutil.which("phoenix")
    if found is not None:
        return [found, "serve"]
    raise ViewerError(f"--viewer needs Arize Phoenix: {INSTALL_HINT}")


#: Phoenix echoes every SQL statement of its migrations (4,600 log lines at each start) and, on a
#: closed network, logs tracebacks of the downloads it tries on its own (a WASM sandbox, a docs
#: server, telemetry); a local viewer needs none of them. The user's own PHOENIX_* settings win.
QUIET_ENV = {"PHOENIX_LOG_MIGRATIONS": "false", "PHOENIX_DB_LOGGING_LEVEL": "warning",
             "PHOENIX_LOGGING_LEVEL": "warning", "PYTHONWARNINGS": "ignore",
             "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_TELEMETRY_ENABLED": "false"}


def stack_env(otlp_port: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the four services need to send their traces to the viewer: OTLP/gRPC to its port
    (added to, not replacing, exporters already chosen), and the turn's words recorded unless
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says otherwise (the viewer is local)."""
    env = os.environ if environ is None else environ
    out = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")
                 if e.strip() and e.strip() != "none"]
    if exporters and not any(e.startswith("otlp") for e in exporters):
        out["OTEL_TRACES_EXPORTER"] = ",".join([*exporters, "otlp"])
    elif env.get("OTEL_TRACES_EXPORTER", "").strip() == "none":
        out["OTEL_TRACES_EXPORTER"] = "otlp"
    if CAPTURE_CONTENT_ENV not in env:
        out[CAPTURE_CONTENT_ENV] = "true"
    return out


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Viewer:
    """Phoenix on 127.0.0.1: UI (and OTLP/HTTP) on ``ui_port``, OTLP/gRPC on ``otlp_port``."""

    data_dir: Path
    log_path: Path
    ui_port: int = 6006
    otlp_port: int = 4317
    command: Sequence[str] = field(default_factory=phoenix_command)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def start(self, timeout_s: float = 180.0) -> None:
        """Start Phoenix and wait until both ports answer; ViewerError if it exits or is slow."""
        for port in (self.ui_port, self.otlp_port):
            if _listening(port):
                raise ViewerError(f"port {port} is already in use (another Phoenix or collector?); "
                                  "choose others with --viewer-port / --viewer-otlp-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**QUIET_ENV, **os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(self.ui_port),
               "PHOENIX_GRPC_PORT": str(self.otlp_port), "PHOENIX_WORKING_DIR": str(self.data_dir)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WITH_PDEATHSIG, *self.command], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not (_listening(self.ui_port) and _listening(self.otlp_port)):
            if self.process.poll() is not None:
                raise ViewerError(f"the viewer exited with code {self.process.returncode}; "
                                  f"see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise ViewerError(f"the viewer did not open ports {self.ui_port} and {self.otlp_port} "
                                  f"within {timeout_s:g} s; see {self.log_path}")
            time.sleep(0.2)  # polling a child's ports: nothing to wait on

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
