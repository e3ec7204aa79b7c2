"""OpenTelemetry metrics of every voxline service: what autoscaling and a latency dashboard read.

Every server counts the calls it is serving (``voxline.server.active_requests``, the live load an
HPA or KEDA scales a stage on), times them (``rpc.server.call.duration``) and, on the orchestrator,
counts open Converse sessions (``voxline.sessions.active``). The orchestrator also records each
turn: its status and its stage latencies, under the GenAI semantic-convention names where they
exist (``gen_ai.client.operation.time_to_first_chunk`` and ``gen_ai.client.operation.duration`` for
the LLM) and ``voxline.*`` names where they do not (STT, TTS first audio, time to first audio).

Where the figures go, set up once per process by ``setup_metrics``:

- a Prometheus scrape endpoint (``--metrics-port``; 0 picks a free port, which is logged), served
  by prometheus_client with the process's own memory and CPU figures alongside;
- OTLP, every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (60 s by default), when
  ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`` is set and ``OTEL_METRICS_EXPORTER`` is not ``none``,
  in the protocol ``OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL`` asks for.

Without either, every instrument is a no-op and costs nothing. The recording functions below may be
called from anywhere, before or after set-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from voxline.common.telemetry import resource_attributes

log = logging.getLogger(__name__)

# Instrument names (OpenTelemetry) ...
ACTIVE_REQUESTS = "voxline.server.active_requests"
ACTIVE_SESSIONS = "voxline.sessions.active"
RPC_SERVER_DURATION = "rpc.server.call.duration"
TURNS = "voxline.turns"
STAGE_RETRIES = "voxline.stage.retries"
STT_DURATION = "voxline.stt.duration"
LLM_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
LLM_DURATION = "gen_ai.client.operation.duration"
TTS_TIME_TO_FIRST_AUDIO = "voxline.tts.time_to_first_audio"
TURN_TIME_TO_FIRST_AUDIO = "voxline.turn.time_to_first_audio"
#: One tool call (orchestrator), seconds, by ``gen_ai.tool.name`` and outcome (ok, error, cancelled).
TOOL_DURATION = "voxline.tool.duration"
# ... and as Prometheus shows them (dots to underscores, units and _total appended), for the HPAs,
# KEDA and the Grafana dashboard.
PROMETHEUS_ACTIVE_REQUESTS = "voxline_server_active_requests"
PROMETHEUS_ACTIVE_SESSIONS = "voxline_sessions_active"
PROMETHEUS_TURNS = "voxline_turns_total"

#: Calls that are not load: health probes (every few seconds) and reflection.
UNCOUNTED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: Methods whose calls are sessions (one per connected user).
SESSION_METHODS = frozenset({"/voxline.v1.VoiceAssistant/Converse"})

#: Seconds; latency buckets from 5 ms to 30 s, dense where voice latency is judged (0.1-1 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
                   1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

_OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class _Instruments:
    """Every instrument, created from one meter."""

    def __init__(self, meter: otel_metrics.Meter) -> None:
        def seconds(name: str, description: str) -> otel_metrics.Histogram:
            return meter.create_histogram(name, unit="s", description=description,
                                          explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS))

        self.active_requests = meter.create_up_down_counter(
            ACTIVE_REQUESTS, unit="{request}", description="gRPC calls being served (health excluded)")
        self.active_sessions = meter.create_up_down_counter(
            ACTIVE_SESSIONS, unit="{session}", description="Converse sessions open")
        self.rpc_duration = seconds(RPC_SERVER_DURATION, "gRPC call duration on the server")
        self.turns = meter.create_counter(TURNS, unit="{turn}", description="turns ended, by status")
        self.retries = meter.create_counter(
            STAGE_RETRIES, unit="{call}", description="stage calls retried on another replica")
        self.stt = seconds(STT_DURATION, "end of utterance to transcript")
        self.llm_first_chunk = seconds(LLM_TIME_TO_FIRST_CHUNK, "LLM request to first text")
        self.llm_duration = seconds(LLM_DURATION, "LLM request to end of reply")
        self.tts_first_audio = seconds(TTS_TIME_TO_FIRST_AUDIO, "first sentence: TTS request to audio")
        self.turn_first_audio = seconds(TURN_TIME_TO_FIRST_AUDIO, "end of utterance to first reply audio")
        self.tool_duration = seconds(TOOL_DURATION, "one tool call, by tool and outcome")


_lock = threading.Lock()
_instruments = _Instruments(otel_metrics.NoOpMeterProvider().get_meter("voxline"))
_provider: MeterProvider | None = None
_endpoint_port: int | None = None
_http_server: Any = None


def _otlp_reader(environ: dict[str, str] | os._Environ[str]) -> MetricReader | None:
    """A periodic OTLP reader when an endpoint is set (and metrics export is not switched off)."""
    if environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return None
    if not any(environ.get(name, "").strip() for name in _OTLP_ENDPOINT_VARIABLES):
        return None
    protocol = (environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        exporter = OTLPMetricExporter()
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpOTLPMetricExporter,
        )
        exporter = HttpOTLPMetricExporter()
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
    return PeriodicExportingMetricReader(exporter)


#: The scrape endpoint serves at most this many connections at once (each on its own thread; more
#: are closed at once), and gives a client this long to send its request and read the reply.
SCRAPE_MAX_CONNECTIONS = 8
SCRAPE_TIMEOUT_S = 5.0


def _scrape_server(host: str, port: int) -> Any:
    """prometheus_client's WSGI app on a server whose threads and waits are bounded (its own
    ``start_http_server`` spends a thread per connection with no timeout: 500 half-sent requests
    held 510 threads)."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Handler(WSGIRequestHandler):
        timeout = SCRAPE_TIMEOUT_S  # socket timeout: a slow or silent client is dropped

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged."""

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        slots = threading.BoundedSemaphore(SCRAPE_MAX_CONNECTIONS)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)  # over the limit: closed, no thread
                return
            super().process_request(request, client_address)

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    server = make_server(host, port, make_wsgi_app(), Server, handler_class=Handler)
    threading.Thread(target=server.serve_forever, name="metrics-scrape", daemon=True).start()
    return server


def setup_metrics(service_name: str, *, port: int | None, host: str = "127.0.0.1") -> int | None:
    """Start exporting: a Prometheus endpoint on ``host:port`` when ``port`` is not None (0: a
    free port), OTLP when the environment asks for it. Once per process; a later call keeps the
    first set-up. Returns the scrape endpoint's port, or None when there is none."""
    global _instruments, _provider, _endpoint_port, _http_server
    with _lock:
        if _provider is not None:
            return _endpoint_port
        readers: list[MetricReader] = []
        otlp = _otlp_reader(os.environ)
        if otlp is not None:
            readers.append(otlp)
        if port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
            _http_server = _scrape_server(host, port)
            _endpoint_port = int(_http_server.server_port)
        if not readers:
            return None
        _provider = MeterProvider(resource=Resource.create(resource_attributes(service_name)),
                                  metric_readers=readers)
        _instruments = _Instruments(_provider.get_meter("voxline"))
        log.info("metrics", extra={"service": service_name, "otlp": otlp is not None,
                                   "prometheus": f"http://{host}:{_endpoint_port}/metrics"
                                   if _endpoint_port is not None else "off"})
        return _endpoint_port


def endpoint_port() -> int | None:
    """The Prometheus endpoint's port in this process, or None when there is none."""
    return _endpoint_port


def shutdown_metrics() -> None:
    """Export what is pending over OTLP (graceful shutdown); the scrape endpoint stays up until
    the process exits, so a last scrape still sees the final counts."""
    with _lock:
        if _provider is not None:
            _provider.force_flush(timeout_millis=5000)


# --- recording ----------------------------------------------------------------------------------

@contextlib.contextmanager
def tracking_call(method: str) -> Iterator[None]:
    """Count a gRPC call as active (and a session, for Converse) while it runs, and time it."""
    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    instruments = _instruments
    session = method in SESSION_METHODS
    instruments.active_requests.add(1, attributes)
    if session:
        instruments.active_sessions.add(1)
    started = time.perf_counter()
    try:
        yield
    finally:
        instruments.rpc_duration.record(time.perf_counter() - started, attributes)
        instruments.active_requests.add(-1, attributes)
        if session:
            instruments.active_sessions.add(-1)


def record_turn(status: str, *, stt_ms: float = 0.0, llm_ttft_ms: float = 0.0, llm_total_ms: float = 0.0,
                tts_first_audio_ms: float = 0.0, time_to_first_audio_ms: float = 0.0,
                llm_provider: str = "") -> None:
    """One ended turn (orchestrator): its status, and each latency it reached (0: not reached, not
    recorded, so an interrupted turn does not pull the histograms down)."""
    i = _instruments
    i.turns.add(1, {"status": status})
    llm = {"gen_ai.operation.name": "chat"}
    if llm_provider:
        llm["gen_ai.provider.name"] = llm_provider
    for histogram, value_ms, attributes in (
            (i.stt, stt_ms, {}), (i.llm_first_chunk, llm_ttft_ms, llm), (i.llm_duration, llm_total_ms, llm),
            (i.tts_first_audio, tts_first_audio_ms, {}), (i.turn_first_audio, time_to_first_audio_ms, {})):
        if value_ms > 0:
            histogram.record(value_ms / 1000.0, attributes)


def record_tool_call(name: str, outcome: str, seconds: float) -> None:
    """One tool call (orchestrator): its duration, labelled by tool and outcome."""
    _instruments.tool_duration.record(seconds, {"gen_ai.tool.name": name, "outcome": outcome})


def record_stage_retry(stage: str) -> None:
    """A stage call that failed before any output is being retried (orchestrator)."""
    _instruments.retries.add(1, {"voxline.stage": stage})


# --- the server side ----------------------------------------------------------------------------

class ActiveRequestsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Tracks every call but health and reflection with ``tracking_call``: the live load a stage's
    autoscaler reads, per pod."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(UNCOUNTED_PREFIXES):
            return handler
        if handler.response_streaming:
            if handler.request_streaming:
                return handler._replace(stream_stream=_tracked_stream(
                    _counted_from_first_message(handler.stream_stream, method), method, counted=False))
            return handler._replace(unary_stream=_tracked_stream(handler.unary_stream, method))
        if handler.request_streaming:
            return handler._replace(stream_unary=_tracked_unary(
                _counted_from_first_message(handler.stream_unary, method), method, counted=False))
        return handler._replace(unary_unary=_tracked_unary(handler.unary_unary, method))


def _tracked_unary(behavior: Callable[..., Awaitable[Any]], method: str, counted: bool = True
                   ) -> Callable[..., Awaitable[Any]]:
    async def tracked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with tracking_call(method) if counted else contextlib.nullcontext():
            return await behavior(request, context)
    return tracked


class _FirstMessageCounts:
    """A request stream that counts its call (``tracking_call``) from its first message on: a
    stream that never sends one (not even its config) is an open connection, not load or a
    session, and must not move an autoscaler (issue 20: streams without a config inflated the
    HPA's figures for free)."""

    def __init__(self, requests: AsyncIterator[Any], method: str) -> None:
        self._requests, self._method = aiter(requests), method
        self._counting: contextlib.ExitStack | None = None

    def __aiter__(self) -> _FirstMessageCounts:
        return self

    async def __anext__(self) -> Any:
        message = await anext(self._requests)
        if self._counting is None:
            self._counting = contextlib.ExitStack()
            self._counting.enter_context(tracking_call(self._method))
        return message

    def close(self) -> None:
        if self._counting is not None:
            self._counting.close()


def _counted_from_first_message(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    """``behavior`` (request-streaming) over ``_FirstMessageCounts``; the count ends with the call."""
    def counted(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        stream = _FirstMessageCounts(requests, method)
        result = behavior(stream, context)
        if hasattr(result, "__aiter__"):
            async def generated() -> AsyncIterator[Any]:
                try:
                    async with contextlib.aclosing(result):
                        async for item in result:
                            yield item
                finally:
                    stream.close()
            return generated()

        async def awaited() -> Any:
            try:
                return await result
            finally:
                stream.close()
        return awaited()
    return counted


def _tracked_stream(behavior: Callable[..., Any], method: str, counted: bool = True
                    ) -> Callable[..., AsyncIterator[Any]]:
    """A response-streaming handler, as an async generator whatever ``behavior`` is: an async
    generator, or a coroutine that writes with ``context.write``. ``counted``: False when
    ``behavior`` counts the call itself (``_counted_from_first_message``)."""
    async def tracked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with tracking_call(method) if counted else contextlib.nullcontext():
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async with contextlib.aclosing(result):
                    async for item in result:
                        yield item
            else:
                await result
    return tracked
