"""`voxline up --viewer`: Arize Phoenix as a child process, the services' trace export pointed at it.

Phoenix itself is a large optional install, so the process handling is tested with a stand-in
`phoenix` command (a script that opens the two ports Phoenix opens) and the environment given to
the services is checked directly."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from voxline.cli import viewer as viewer_module
from voxline.cli.viewer import Viewer, ViewerError, stack_env

FAKE_PHOENIX = """
import json, os, signal, socket, sys
with open(os.environ["FAKE_PHOENIX_RECORD"], "w") as f:
    json.dump({"argv": sys.argv[1:], **{k: v for k, v in os.environ.items() if k.startswith("PHOENIX_")}}, f)
socks = []
for name in ("PHOENIX_PORT", "PHOENIX_GRPC_PORT"):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((os.environ["PHOENIX_HOST"], int(os.environ[name]))); s.listen(); socks.append(s)
signal.sigwait({signal.SIGTERM})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_services_export_to_the_viewer_and_keep_other_exporters() -> None:
    env = stack_env(4317, {})
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://127.0.0.1:4317"
    assert env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "grpc"
    assert env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "true"  # a local viewer
    assert "OTEL_TRACES_EXPORTER" not in env  # unset: an endpoint means OTLP (voxline.common.telemetry)
    assert stack_env(4317, {"OTEL_TRACES_EXPORTER": "console"})["OTEL_TRACES_EXPORTER"] == "console,otlp"
    assert stack_env(4317, {"OTEL_TRACES_EXPORTER": "none"})["OTEL_TRACES_EXPORTER"] == "otlp"
    assert "OTEL_TRACES_EXPORTER" not in stack_env(4317, {"OTEL_TRACES_EXPORTER": "otlp"})
    # The user's own choice about recording their words stands.
    kept = stack_env(4317, {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"})
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" not in kept


def test_starts_on_loopback_waits_for_both_ports_and_stops(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "phoenix.py"
    script.write_text(FAKE_PHOENIX)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_PHOENIX_RECORD", str(record))
    viewer = Viewer(data_dir=tmp_path / "data", log_path=tmp_path / "logs" / "viewer.log",
                    ui_port=free_port(), otlp_port=free_port(),
                    command=[sys.executable, str(script), "serve"])
    viewer.start(timeout_s=60)
    try:
        seen = json.loads(record.read_text())
        assert seen["argv"] == ["serve"]
        assert seen["PHOENIX_HOST"] == "127.0.0.1"  # never on every interface
        assert (seen["PHOENIX_PORT"], seen["PHOENIX_GRPC_PORT"]) == (str(viewer.ui_port),
                                                                     str(viewer.otlp_port))
        assert seen["PHOENIX_WORKING_DIR"] == str(tmp_path / "data")
        # quiet and offline: no SQL echo of its migrations (4,600 lines), no downloads of its own
        assert seen["PHOENIX_LOG_MIGRATIONS"] == "false"
        assert seen["PHOENIX_ALLOW_EXTERNAL_RESOURCES"] == "false"
        assert viewer.url == f"http://127.0.0.1:{viewer.ui_port}"
        with pytest.raises(ViewerError, match="already in use"):  # a second one is refused
            Viewer(data_dir=tmp_path, log_path=tmp_path / "v2.log", ui_port=viewer.ui_port,
                   otlp_port=free_port(), command=["true"]).start()
    finally:
        code = viewer.stop()
    assert code is not None  # it exited
    assert viewer.process is not None and viewer.process.poll() is not None


def test_a_viewer_that_dies_at_start_is_reported(tmp_path: Path) -> None:
    viewer = Viewer(data_dir=tmp_path, log_path=tmp_path / "viewer.log", ui_port=free_port(),
                    otlp_port=free_port(), command=[sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ViewerError, match=f"exited with code 3; see {tmp_path / 'viewer.log'}"):
        viewer.start(timeout_s=60)


def test_without_phoenix_up_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viewer_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ViewerError, match=r"make viewer"):
        viewer_module.phoenix_command()
    monkeypatch.undo()
    if importlib.util.find_spec("phoenix") is not None:
        pytest.skip("Phoenix is installed in this environment: `up --viewer` would start it")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "phoenix").exists())
    done = subprocess.run([sys.executable, "-m", "voxline.cli", "up", "--viewer", "--base-port", "0",
                           "--log-dir", str(tmp_path / "logs")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": path}, check=False)
    assert done.returncode == 2
    assert "--viewer needs Arize Phoenix" in done.stderr and "Traceback" not in done.stderr
    assert "starting stt" not in done.stderr  # nothing was started
