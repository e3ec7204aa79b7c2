"""Telemetry follows the standard OTEL_* variables (through the SDK's own configurator), keeps each
service's own service.name, and exports where those variables say: checked with real processes and
local OTLP receivers (HTTP and gRPC) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from voxline.common.config import ConfigError
from voxline.common.telemetry import default_trace_exporters, resource_attributes

# One "service" process: set telemetry up as a server does, make one span with an event, shut down.
SERVICE = """
import sys
from opentelemetry import trace
from voxline.common.telemetry import setup_telemetry, shutdown_telemetry
setup_telemetry(sys.argv[1], instrument_grpc=False)
with trace.get_tracer("test").start_as_current_span("work") as span:
    span.add_event("first token")
shutdown_telemetry()
"""


def run_service(name: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("VOXLINE_SPAN_FILE", None)
    return subprocess.run([sys.executable, "-c", SERVICE, name], env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)


def resource_of(request: trace_service_pb2.ExportTraceServiceRequest) -> dict[str, str]:
    attributes = request.resource_spans[0].resource.attributes
    return {a.key: a.value.string_value for a in attributes}


def span_names(request: trace_service_pb2.ExportTraceServiceRequest) -> list[str]:
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    request: trace_service_pb2.ExportTraceServiceRequest


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, queue.Queue[Received]]]:
    """A minimal OTLP/HTTP (protobuf) traces receiver."""
    got: queue.Queue[Received] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            got.put(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, request))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_http_protobuf_export_reaches_an_otlp_http_receiver_with_headers(
        http_receiver: tuple[str, queue.Queue[Received]]) -> None:
    endpoint, got = http_receiver
    result = run_service("voxline-stt", {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme", "OTEL_SERVICE_NAME": "myvoice",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"})
    assert result.returncode == 0, result.stderr
    received = got.get(timeout=30)
    assert received.path == "/v1/traces"
    assert received.headers["x-tenant"] == "acme"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert span_names(received.request) == ["work"]
    resource = resource_of(received.request)
    assert resource["service.name"] == "voxline-stt"  # not "myvoice"
    assert resource["service.namespace"] == "myvoice"
    assert resource["deployment.environment.name"] == "test"


def test_traces_protocol_variable_wins_over_the_general_one(
        http_receiver: tuple[str, queue.Queue[Received]]) -> None:
    endpoint, got = http_receiver
    result = run_service("voxline-tts", {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces", "OTEL_TRACES_EXPORTER": "otlp"})
    assert result.returncode == 0, result.stderr
    assert resource_of(got.get(timeout=30).request)["service.name"] == "voxline-tts"


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.got: queue.Queue[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = (
            queue.Queue())

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
               context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        self.got.put((dict(context.invocation_metadata()), request))
        return trace_service_pb2.ExportTraceServiceResponse()


def test_grpc_export_by_default_when_an_endpoint_is_set() -> None:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = run_service("voxline-llm", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme"})
        assert result.returncode == 0, result.stderr
        metadata, request = collector.got.get(timeout=30)
    finally:
        server.stop(None)
    assert metadata["x-tenant"] == "acme"
    assert span_names(request) == ["work"]
    assert resource_of(request)["service.name"] == "voxline-llm"


def test_one_environment_for_four_services_keeps_four_names(tmp_path: Path) -> None:
    # What `voxline up` and `demo` do: every child inherits the same environment.
    span_file = tmp_path / "spans.jsonl"
    env = {"OTEL_SERVICE_NAME": "myvoice", "VOXLINE_SPAN_FILE": str(span_file),
           "OTEL_TRACES_EXPORTER": "none"}
    names = ("voxline-stt", "voxline-llm", "voxline-tts", "voxline-orchestrator")
    for name in names:
        result = run_service(name, env)
        assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in span_file.read_text().splitlines()]
    assert sorted(s["service"] for s in spans) == sorted(names)
    assert all(s["events"][0]["name"] == "first token" for s in spans)


def test_sampler_variable_is_honoured(tmp_path: Path) -> None:
    span_file = tmp_path / "spans.jsonl"
    result = run_service("voxline-stt", {"OTEL_TRACES_SAMPLER": "always_off",
                                         "VOXLINE_SPAN_FILE": str(span_file)})
    assert result.returncode == 0, result.stderr
    assert span_file.read_text() == ""


def test_console_exporter_prints_the_span() -> None:
    result = run_service("voxline-tts", {"OTEL_TRACES_EXPORTER": "console"})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["name"] == "work"
    assert printed["resource"]["attributes"]["service.name"] == "voxline-tts"


def test_unknown_exporter_is_a_config_error_naming_it() -> None:
    result = run_service("voxline-tts", {"OTEL_TRACES_EXPORTER": "zipkin_json"})
    assert result.returncode != 0
    assert "ConfigError" in result.stderr and "zipkin_json" in result.stderr


def test_resource_attributes_keep_the_service_name() -> None:
    project = "openinference.project.name"
    assert resource_attributes("voxline-stt", {}) == {"service.name": "voxline-stt", project: "voxline"}
    assert resource_attributes("voxline-stt", {"OTEL_SERVICE_NAME": "voxline-stt"}) == {
        "service.name": "voxline-stt", project: "voxline"}  # compose: each service's own name
    assert resource_attributes("voxline-stt", {"OTEL_SERVICE_NAME": "myvoice"}) == {
        "service.name": "voxline-stt", "service.namespace": "myvoice", project: "myvoice"}
    # A namespace given explicitly wins (the SDK reads it from OTEL_RESOURCE_ATTRIBUTES itself).
    assert resource_attributes("voxline-stt", {
        "OTEL_SERVICE_NAME": "myvoice", "OTEL_RESOURCE_ATTRIBUTES": "a=b, service.namespace=prod"}) == {
        "service.name": "voxline-stt", project: "prod"}
    assert resource_attributes("voxline-stt", {
        "OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=mine"}) == {"service.name": "voxline-stt"}


def test_default_exporters() -> None:
    assert default_trace_exporters({}) == []  # nothing configured: no export, no connection errors
    assert default_trace_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == ["otlp_proto_grpc"]
    assert default_trace_exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces",
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == ["otlp_proto_http"]
    # An explicit OTEL_TRACES_EXPORTER is the SDK's to read: nothing added.
    assert default_trace_exporters({"OTEL_TRACES_EXPORTER": "console",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == []
    with pytest.raises(ConfigError, match="http/json"):
        default_trace_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                                 "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


GRPC_SERVICE = """
import asyncio, sys
import grpc
from voxline.common.telemetry import setup_telemetry, shutdown_telemetry
setup_telemetry("voxline-tts")
from voxline.v1 import tts_pb2, tts_pb2_grpc, voice_pb2, voice_pb2_grpc

class Voices(tts_pb2_grpc.TextToSpeechServicer):
    async def ListVoices(self, request, context):
        return tts_pb2.ListVoicesResponse()

    async def Synthesize(self, request, context):
        yield tts_pb2.SynthesizeResponse()

class Assistant(voice_pb2_grpc.VoiceAssistantServicer):
    async def Converse(self, request_iterator, context):
        async for _ in request_iterator:
            yield voice_pb2.ConverseResponse()

async def main():
    server = grpc.aio.server()
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(Voices(), server)
    voice_pb2_grpc.add_VoiceAssistantServicer_to_server(Assistant(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        await stub.ListVoices(tts_pb2.ListVoicesRequest())
        async for _ in stub.Synthesize(tts_pb2.SynthesizeRequest(text="hi")):
            pass
        call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()
        await call.write(voice_pb2.ConverseRequest(text="hi"))
        await call.read()
        await call.done_writing()
        await call.code()
    await server.stop(None)
    shutdown_telemetry()

asyncio.run(main())
"""


def test_grpc_spans_get_openinference_kinds_conversation_and_control_calls_none(tmp_path: Path) -> None:
    span_file = tmp_path / "spans.jsonl"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", GRPC_SERVICE], capture_output=True, text=True,
                          timeout=60, check=False, env={**clean, "VOXLINE_SPAN_FILE": str(span_file)})
    assert done.returncode == 0, done.stderr
    spans = [json.loads(line) for line in span_file.read_text().splitlines()]
    # Synthesize is traced; Converse (a conversation's stream) and ListVoices (a control call) not.
    assert sorted((s["name"], s["kind"]) for s in spans) == [
        ("/voxline.v1.TextToSpeech/Synthesize", "CLIENT"), ("/voxline.v1.TextToSpeech/Synthesize", "SERVER")]
    assert {s["attributes"]["openinference.span.kind"] for s in spans} == {"TOOL"}


def test_spans_carry_an_openinference_kind_and_their_service() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voxline.common.telemetry import ViewerAttributes

    provider = TracerProvider(resource=Resource.create({"service.name": "voxline-llm"}))
    provider.add_span_processor(ViewerAttributes())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for name in ("/voxline.v1.LanguageModel/Generate", "/voxline.v1.SpeechToText/Transcribe",
                 "/voxline.v1.VoiceAssistant/Converse", "something.else"):
        tracer.start_span(name).end()
    tracer.start_span("llm", attributes={"openinference.span.kind": "LLM"}).end()
    finished = exporter.get_finished_spans()
    assert {(s.attributes or {})["service.name"] for s in finished} == {"voxline-llm"}
    kinds = {s.name: (s.attributes or {})["openinference.span.kind"] for s in finished}
    assert kinds == {"/voxline.v1.LanguageModel/Generate": "LLM",
                     "/voxline.v1.SpeechToText/Transcribe": "TOOL",
                     "/voxline.v1.VoiceAssistant/Converse": "CHAIN", "something.else": "CHAIN", "llm": "LLM"}
