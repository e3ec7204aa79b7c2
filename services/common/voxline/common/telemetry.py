"""OpenTelemetry set-up from the standard ``OTEL_*`` variables, plus a local JSON-lines span file.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: export spans over OTLP/gRPC.
- ``OTEL_TRACES_EXPORTER=console``: print spans to stderr; ``none``: export nothing over OTLP.
- ``OTEL_SERVICE_NAME``: overrides the service name.
- ``VOXLINE_SPAN_FILE``: append every finished span as one JSON line to this file (read by
  ``voxline report``); several processes may share one file (each line is one atomic append).

gRPC instrumentation (server and client, grpc.aio) is switched on here, so it must run before any
server or channel is created: the incoming ``traceparent`` then parents each server span.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

log = logging.getLogger(__name__)

_lock = threading.Lock()
_provider: TracerProvider | None = None


def span_to_dict(span: ReadableSpan) -> dict[str, object]:
    """A finished span as a flat JSON-able dict (ids in hex, times in ns since the epoch)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "service": span.resource.attributes.get("service.name", ""),
        "kind": span.kind.name if span.kind else "",
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in (span.attributes or {}).items()},
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as a JSON line to a file; safe across processes (O_APPEND, one write)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # Opened once: every span of every turn ends here, so no open/close per export.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_to_dict(s), default=str) + "\n" for s in spans)
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            os.write(self._fd, data.encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def setup_telemetry(service_name: str, *, instrument_grpc: bool = True) -> TracerProvider:
    """Install the global tracer provider once per process and instrument grpc.aio."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        name = os.environ.get("OTEL_SERVICE_NAME") or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if endpoint and "otlp" in exporters:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            log.info("exporting spans over OTLP", extra={"endpoint": endpoint})
        if "console" in exporters:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        span_file = os.environ.get("VOXLINE_SPAN_FILE")
        if span_file:
            # Simple (synchronous) processor: a span is on disk when it ends, so a file reader
            # never misses spans of a process that was killed.
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(span_file)))
            log.info("writing spans to file", extra={"span_file": span_file})
        trace.set_tracer_provider(provider)
        if instrument_grpc:
            from opentelemetry.instrumentation.grpc import (
                GrpcAioInstrumentorClient,
                GrpcAioInstrumentorServer,
                filters,
            )

            # Health probes (voxline up, compose, tests poll every 100 ms) and reflection would
            # bury the turns' spans; they are not traced.
            untraced = filters.negate(filters.any_of(
                filters.health_check(), filters.service_prefix("grpc.reflection")))
            GrpcAioInstrumentorServer(filter_=untraced).instrument()  # type: ignore[no-untyped-call]
            GrpcAioInstrumentorClient(filter_=untraced).instrument()  # type: ignore[no-untyped-call]
        _provider = provider
        return provider


def shutdown_telemetry() -> None:
    """Flush and close exporters (called on graceful shutdown)."""
    with _lock:
        if _provider is not None:
            _provider.shutdown()
