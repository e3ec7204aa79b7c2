"""Metrics: a real server on 127.0.0.1 with --metrics-port 0, scraped over HTTP like Prometheus.

The endpoint is set up once per process, so each test reads the counts before and after and
asserts the difference.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from voxline.common import metrics
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server

SERVICE = "voxline.test.Gate"
#: The orchestrator's session method: its calls count as sessions.
CONVERSE = "voxline.v1.VoiceAssistant"


class Gate:
    """Calls that wait until the test opens the gate, so they can be seen in flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Queue[str]()
        self.open = asyncio.Event()

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self.entered.put("unary")
        await self.open.wait()
        return b"ok:" + request

    async def converse(self, requests: AsyncIterator[bytes],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await self.entered.put("converse")
        async for request in requests:
            yield b"echo:" + request


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningServer, Gate, int]]:
    gate = Gate()

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(SERVICE, {
                "Unary": grpc.unary_unary_rpc_method_handler(gate.unary)}),
            grpc.method_handlers_generic_handler(CONVERSE, {
                "Converse": grpc.stream_stream_rpc_method_handler(gate.converse)}),
        ])

    async def warm_up() -> None:
        return None

    spec = ServiceSpec(name="voxline-test", grpc_services=[SERVICE], register=register, warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0, metrics_port=0))
    await running.warm_up()
    port = metrics.endpoint_port()
    assert port is not None and port > 0
    try:
        yield running, gate, port
    finally:
        gate.open.set()
        await running.stop(0)


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the endpoint, keyed by name and labels (OpenTelemetry scope labels dropped)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope"))
            samples[(s.name, labels)] = s.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_active_requests_count_calls_in_flight_and_not_health(
        served: tuple[RunningServer, Gate, int]) -> None:
    running, gate, port = served
    active = metrics.PROMETHEUS_ACTIVE_REQUESTS
    before = await scrape(port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        calls = [asyncio.ensure_future(unary(b"x", timeout=10)) for _ in range(3)]
        for _ in calls:
            assert await asyncio.wait_for(gate.entered.get(), 10) == "unary"
        for _ in range(5):  # health probes are not load
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        during = await scrape(port)
        assert value(during, active, rpc_method="Unary", rpc_service=SERVICE) == 3
        assert value(during, active, rpc_service="grpc.health.v1.Health") == 0
        gate.open.set()
        assert await asyncio.gather(*calls) == [b"ok:x"] * 3
    after = await scrape(port)
    assert value(after, active, rpc_method="Unary") == 0
    count = "rpc_server_call_duration_seconds_count"
    assert value(after, count, rpc_method="Unary") - value(before, count, rpc_method="Unary") == 3
    assert value(after, count, rpc_method="Check") == 0
    # The process's own footprint is on the same endpoint (the dashboard's memory panel).
    assert value(after, "process_resident_memory_bytes") > 0


async def test_converse_streams_count_as_sessions(served: tuple[RunningServer, Gate, int]) -> None:
    running, _, port = served
    sessions = metrics.PROMETHEUS_ACTIVE_SESSIONS
    before = value(await scrape(port), sessions)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = channel.stream_stream(f"/{CONVERSE}/Converse")(timeout=10)
        await call.write(b"hello")
        assert await call.read() == b"echo:hello"
        assert value(await scrape(port), sessions) == before + 1
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert value(await scrape(port), sessions) == before


async def test_turns_by_status_and_stage_latency_histograms(
        served: tuple[RunningServer, Gate, int]) -> None:
    _, _, port = served
    before = await scrape(port)
    metrics.record_turn("completed", stt_ms=30, llm_ttft_ms=120, llm_total_ms=400, tts_first_audio_ms=60,
                        time_to_first_audio_ms=250, llm_provider="groq")
    metrics.record_turn("completed", stt_ms=20, llm_ttft_ms=80, llm_total_ms=300, tts_first_audio_ms=40,
                        time_to_first_audio_ms=150, llm_provider="groq")
    metrics.record_turn("failed", stt_ms=25)  # failed after STT: only STT is timed
    after = await scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(metrics.PROMETHEUS_TURNS, status="completed") == 2
    assert delta(metrics.PROMETHEUS_TURNS, status="failed") == 1
    assert delta("voxline_stt_duration_seconds_count") == 3
    assert delta("gen_ai_client_operation_time_to_first_chunk_seconds_count",
                 gen_ai_provider_name="groq", gen_ai_operation_name="chat") == 2
    assert delta("gen_ai_client_operation_duration_seconds_count") == 2
    assert delta("voxline_tts_time_to_first_audio_seconds_count") == 2
    ttfa = "voxline_turn_time_to_first_audio_seconds"
    assert delta(f"{ttfa}_count") == 2
    assert delta(f"{ttfa}_sum") == pytest.approx(0.4)
    # Buckets are cumulative: 150 ms is under 0.2 s, 250 ms is not.
    assert delta(f"{ttfa}_bucket", le="0.2") == 1
    assert delta(f"{ttfa}_bucket", le="0.3") == 2


@pytest.mark.parametrize("service", ["stt", "llm", "tts", "orchestrator"])
def test_every_service_has_the_metrics_and_connection_age_options(service: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"voxline.{service}", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--metrics-port" in result.stdout and "VOXLINE_METRICS_PORT" in result.stdout
    assert "--max-connection-age-s" in result.stdout


async def test_max_connection_age_moves_clients_to_a_new_connection_without_failing_calls() -> None:
    """After the age, the server sends GOAWAY: the client's next calls go over a new connection
    (where a re-resolved name would reach new replicas) and a call in flight still completes."""
    gate = Gate()

    async def peer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"wait":
            await gate.entered.put("unary")
            await gate.open.wait()
        return context.peer().encode()

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Peer": grpc.unary_unary_rpc_method_handler(peer)})])

    async def warm_up() -> None:
        return None

    spec = ServiceSpec(name="voxline-test", grpc_services=[SERVICE], register=register, warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0, max_connection_age_s=0.5))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/Peer")
            first = await call(b"", timeout=5)
            slow = asyncio.ensure_future(call(b"wait", timeout=30))
            await asyncio.wait_for(gate.entered.get(), 10)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            peers = {first}
            while len(peers) == 1 and loop.time() < deadline:  # bounded: the age is 0.5 s
                peers.add(await call(b"", timeout=5))
                await asyncio.sleep(0.1)
            assert len(peers) > 1, "the client never moved to a new connection"
            gate.open.set()
            assert await slow == first  # finished on the old connection, not failed
    finally:
        gate.open.set()
        await running.stop(0)


async def test_otlp_export_reaches_a_collector_named_by_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP reader setup_metrics adds when OTEL_EXPORTER_OTLP_ENDPOINT is set delivers the
    instruments to a collector (a gRPC OTLP metrics receiver on 127.0.0.1, written here)."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
    from opentelemetry.sdk.metrics import MeterProvider

    received: list[str] = []

    class Collector(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
        async def Export(self, request: Any, context: Any) -> Any:
            received.extend(m.name for rm in request.resource_metrics for sm in rm.scope_metrics
                            for m in sm.metrics)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        reader = metrics._otlp_reader(os.environ)
        assert reader is not None
        provider = MeterProvider(metric_readers=[reader])
        instruments = metrics._Instruments(provider.get_meter("voxline"))
        instruments.turns.add(1, {"status": "completed"})
        instruments.turn_first_audio.record(0.3)
        await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        await server.stop(0)
    assert {metrics.TURNS, metrics.TURN_TIME_TO_FIRST_AUDIO} <= set(received)


def test_otlp_export_follows_the_standard_variables() -> None:
    assert metrics._otlp_reader({}) is None  # no endpoint: no export (and no connection errors)
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert metrics._otlp_reader({**endpoint, "OTEL_METRICS_EXPORTER": "none"}) is None
    assert metrics._otlp_reader({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4317"}) is not None
    http = metrics._otlp_reader({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert http is not None and "http" in type(http._exporter).__module__
    with pytest.raises(ValueError, match="grpc or http/protobuf"):
        metrics._otlp_reader({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})


def test_the_scrape_endpoint_bounds_its_threads_and_drops_silent_clients() -> None:
    """500 half-sent requests held 510 threads of prometheus_client's own server."""
    import socket
    import threading
    import time
    import urllib.request

    from voxline.common.metrics import SCRAPE_MAX_CONNECTIONS, SCRAPE_TIMEOUT_S, _scrape_server

    server = _scrape_server("127.0.0.1", 0)
    port = server.server_port
    before = threading.active_count()
    idle = []
    try:
        for _ in range(60):  # connect, send half a request, say nothing more
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(sock)
        deadline = time.monotonic() + 5
        while threading.active_count() - before < SCRAPE_MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the thread count, not timing the server
        assert threading.active_count() - before <= SCRAPE_MAX_CONNECTIONS
        # the silent clients time out; a real scrape is then served
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S * 3
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "no scrape served after the idle clients timed out"
                time.sleep(0.05)  # polling until a slot is free
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
