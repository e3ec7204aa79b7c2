"""``python -m voxline.edge`` as a process: HTTPS with --tls-cert/--tls-key, the port file, SIGTERM
exits 0, and a configuration that cannot work is one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from common.tls_certs import make_certs
from edge_support import ScriptedOrchestrator, serve_orchestrator, speech_like

from voxline.cli.service_process import ServiceProcess
from voxline.edge.client import EdgeClient


def test_https_page_and_health_then_sigterm_exits_0(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    # no orchestrator listens on port 1: health is NOT_SERVING, the page is served all the same
    edge = ServiceProcess("edge", [sys.executable, "-m", "voxline.edge", "--port", "0",
                                   "--orchestrator", "127.0.0.1:1", "--tls-cert", str(certs.server_cert),
                                   "--tls-key", str(certs.server_key)], keep_lines=None)
    try:
        port = edge.wait_port(60)
        assert edge.metrics_port == port  # /metrics lives on the HTTP port
        context = ssl.create_default_context(cafile=str(certs.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=10) as page:
            assert "window.voxline = {" in page.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=10)
        assert refused.value.code == 503
        assert json.loads(refused.value.read())["status"] == "NOT_SERVING"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext is not served
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert f"page=https://127.0.0.1:{port}/ phone=wss://127.0.0.1:{port}/phone" in edge.logs
    finally:
        code = edge.stop(signal.SIGTERM)
    assert code == 0, edge.logs


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
    (["--max-peers", "0"], "--max-peers must be >= 1"),
    (["--ice-servers", "http://x"], "is not a stun:, turn: or turns: URL"),
    (["--ice-servers", "turn:turn.example.com:3478"], "a turn: server needs --turn-username"),
    (["--auth-token-file", "/nonexistent/token"], "cannot read --auth-token-file file"),
])
def test_a_configuration_that_cannot_work_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "voxline.edge", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.asyncio
async def test_the_edge_span_joins_the_turns_trace(tmp_path: Path) -> None:
    """The orchestrator names the turn's trace in its metrics; the edge's span is in that trace."""
    span_file = tmp_path / "spans.jsonl"
    async with serve_orchestrator(ScriptedOrchestrator(reply_s=0.5)) as address:
        edge = ServiceProcess("edge", [sys.executable, "-m", "voxline.edge", "--port", "0",
                                       "--orchestrator", address, "--ice-host-addresses", "127.0.0.1"],
                              {"VOXLINE_SPAN_FILE": str(span_file), "OTEL_TRACES_EXPORTER": "none"},
                              keep_lines=None)
        try:
            port = await asyncio.to_thread(edge.wait_port, 60)
            client = EdgeClient(f"http://127.0.0.1:{port}")
            await client.connect()
            client.mic.say(speech_like(0.5), 16_000)
            metrics = await client.wait_for(lambda e: e["type"] == "turn_metrics", 30)
            await client.close()
        finally:
            code = await asyncio.to_thread(edge.stop, signal.SIGTERM)
    assert code == 0, edge.logs
    spans = [json.loads(line) for line in span_file.read_text().splitlines()]
    [reply] = [s for s in spans if s["name"] == "voxline.edge.reply"]
    assert reply["trace_id"] == metrics["trace_id"] and reply["service"] == "voxline-edge"
    assert reply["attributes"]["voxline.turn.number"] == 1
    assert reply["attributes"]["voxline.turn.status"] == "COMPLETED"
