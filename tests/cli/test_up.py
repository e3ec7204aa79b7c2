"""`voxline up` with the four real services (subprocesses, free ports): a spoken turn with the
demo's turn loop, `voxline report` on the spans it left, then SIGTERM stops everything, exit 0.

Heavy (the real models load: tens of seconds on a quiet 2-core machine, minutes on a busy one), so
the stack is started once for the module and the tests run in file order against it; `voxline talk`
is covered against a fake orchestrator in test_talk.py. The orchestrator's stage deadlines are
relaxed through its env vars: on a loaded CI machine the local LLM can be silent for more than the
default 10 s, and this test is about the CLI, not about deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.cli.demo import build_table, play_turns

STAGES = ("stt", "llm", "tts", "orchestrator")
MISSING = [s for s in STAGES if importlib.util.find_spec(f"voxline.{s}.__main__") is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"services not built yet: {', '.join(MISSING)}"),
]
START_TIMEOUT_S = 280
RELAXED = {f"VOXLINE_ORCHESTRATOR_{name}_DEADLINE": "120"
           for name in ("STT", "LLM_FIRST_TOKEN", "LLM", "TTS")}


@dataclass
class Up:
    proc: subprocess.Popen[str]
    span_file: Path
    endpoints: dict[str, str] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def _drain(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    work = tmp_path_factory.mktemp("up")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxline.cli", "up", "--base-port", "0", "--log-dir", str(work / "logs"),
         "--span-file", str(work / "spans.jsonl"), "--start-timeout", str(START_TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # OTEL_SERVICE_NAME names the deployment: the four services keep their own names
        env={**os.environ, **RELAXED, "OTEL_SERVICE_NAME": "myvoice"})
    handle = Up(proc, work / "spans.jsonl")
    assert proc.stderr is not None and proc.stdout is not None
    err_reader = threading.Thread(target=_drain, args=(proc.stderr, handle.stderr), daemon=True)
    err_reader.start()
    # stdout: the endpoints block, printed once every service is SERVING (or nothing: it exited).
    for line in proc.stdout:
        handle.stdout.append(line.rstrip("\n"))
        if match := re.match(r"\s+(stt|llm|tts|orchestrator)\s+(127\.0\.0\.1:\d+)$", line):
            handle.endpoints[match.group(1)] = match.group(2)
        if line.startswith("stop:"):
            break
    out_reader = threading.Thread(target=_drain, args=(proc.stdout, handle.stdout), daemon=True)
    out_reader.start()
    try:
        yield handle
    finally:
        if proc.poll() is None:  # a test failed before the SIGTERM test: stop the stack cleanly
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()  # the services get SIGTERM from the kernel (parent-death signal)
                proc.wait()


def test_up_prints_every_endpoint_once_all_are_serving(up: Up) -> None:
    assert set(up.endpoints) == set(STAGES), "\n".join(up.stdout + up.stderr)
    for stage, address in up.endpoints.items():
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING, stage
    assert any("orchestrator serving" in line for line in up.stderr)  # the progress display


def test_up_prints_the_edge_page_and_phone_line(up: Up) -> None:
    page = next(line.split()[1] for line in up.stdout if line.startswith("browser:"))
    phone = next(line.split()[2] for line in up.stdout if line.startswith("phone line:"))
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page) and phone == f"ws{page[4:]}phone"
    with urllib.request.urlopen(page, timeout=10) as response:
        assert "window.voxline" in response.read().decode()
    with urllib.request.urlopen(f"{page}health", timeout=10) as response:
        assert json.loads(response.read())["status"] == "SERVING"


def test_spoken_demo_turns_are_heard_and_tabled(up: Up) -> None:
    ns = argparse.Namespace(turns=1, language="en", voice="", llm_providers="", cache=False)
    out = _Sink()
    (turn,) = asyncio.run(play_turns(up.endpoints["orchestrator"], up.endpoints["tts"], ns, out))
    assert turn.question == "What is the capital of France?"
    heard = re.sub(r"[^a-z ]", "", turn.result.transcript.lower())
    assert "capital of france" in heard, turn.result.transcript
    assert turn.result.status == "COMPLETED", turn.result.metrics
    assert turn.result.reply_text.strip()
    assert turn.result.pcm and turn.result.sample_rate > 0
    assert "heard:     " in out.text and "first audio" in out.text
    (row,) = build_table([turn], 500.0).rows
    assert row.label == "1"
    assert row.stt_ms > 0 and row.total_ms >= row.time_to_first_audio_ms > 0


def test_report_reads_the_spans_the_stack_wrote(up: Up, tmp_path: Path) -> None:
    png = tmp_path / "turn.png"
    done = subprocess.run(
        [sys.executable, "-m", "voxline.cli", "report", str(up.span_file), "--png", str(png)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 turn(s)" in done.stdout
    assert "spans from voxline-llm, voxline-orchestrator, voxline-stt, voxline-tts" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_stops_every_service_and_exits_0(up: Up) -> None:
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0, "\n".join(up.stderr)
    assert any("all services stopped" in line for line in up.stderr)
    for address in up.endpoints.values():
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


class _Sink:
    """A text stream for the demo's per-turn lines."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        return None
