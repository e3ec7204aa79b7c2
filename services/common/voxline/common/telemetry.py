"""OpenTelemetry set-up through the SDK's own environment configuration, plus a local span file.

The SDK configurator that ``opentelemetry-distro`` and ``opentelemetry-instrument`` use builds the
providers, so every standard variable works as documented by OpenTelemetry:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``, several comma-separated),
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``grpc`` or ``http/protobuf``),
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` / ``_HEADERS`` / ``_INSECURE`` / ``_CERTIFICATE``,
``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_METRICS_EXPORTER``,
``OTEL_CONFIG_FILE``.

Two choices differ from the distro, on purpose:

- ``service.name`` is always the service's own (``voxline-stt``, ...): a stack started from one
  environment (``voxline up``, ``demo``) would otherwise give its four services one name.
  ``OTEL_SERVICE_NAME``, when set to something else, names the deployment instead: it becomes
  ``service.namespace`` unless ``OTEL_RESOURCE_ATTRIBUTES`` sets one.
- Without ``OTEL_TRACES_EXPORTER``, spans go over OTLP only when an OTLP endpoint variable is set
  (the distro always exports, and logs a connection error every few seconds when nothing listens).

``VOXLINE_SPAN_FILE`` appends every finished span as one JSON line to a file (read by ``voxline
report``); several processes may share one file (each line is one atomic append).

A process already configured by ``opentelemetry-instrument`` keeps that configuration; only the
span file is added. gRPC instrumentation (server and client, grpc.aio) is switched on here, so this
must run before any server or channel is created: the incoming ``traceparent`` then parents each
server span.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from voxline.common.config import ConfigError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_provider: TracerProvider | None = None

#: Calls that get no span: the long-lived streams of a conversation (each turn is its own trace,
#: grouped by its ``session.id`` attribute, so a conversation adds no hours-long trace beside its
#: turns) and the control calls a session makes outside any turn (checking a voice), which would
#: each add a one-span trace beside the turns.
UNTRACED_METHODS = ("/voxline.v1.VoiceAssistant/Converse", "/voxline.v1.SpeechToText/Listen",
                    "/voxline.v1.TextToSpeech/ListVoices", "/voxline.v1.LanguageModel/ListProviders")

#: OpenInference span kind (what Phoenix shows and filters on) of each gRPC service's calls; a
#: span with no kind of its own, and no match here, is a CHAIN.
OPENINFERENCE_KIND = "openinference.span.kind"
_KIND_BY_SERVICE = {"/voxline.v1.LanguageModel/": "LLM", "/voxline.v1.SpeechToText/": "TOOL",
                    "/voxline.v1.TextToSpeech/": "TOOL", "/voxline.v1.VoiceAssistant/": "CHAIN"}

#: Variables that point OTLP export somewhere: one of them set means "export over OTLP" when
#: OTEL_TRACES_EXPORTER is not set.
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


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
        "events": [{"name": e.name, "time_ns": e.timestamp,
                    "attributes": {k: (list(v) if isinstance(v, tuple) else v)
                                   for k, v in (e.attributes or {}).items()}}
                   for e in span.events],
        "links": [{"trace_id": format(link.context.trace_id, "032x"),
                   "span_id": format(link.context.span_id, "016x")} for link in span.links],
    }


class ViewerAttributes(SpanProcessor):
    """What trace viewers built on OpenInference (Arize Phoenix) need on the span itself:

    - an OpenInference kind when the span starts without one: by gRPC service for the instrumented
      calls (LLM for the gateway, TOOL for speech, CHAIN for the assistant), CHAIN otherwise
      (Phoenix shows "unknown");
    - the service's name (Phoenix shows span attributes only, not the resource's), so every span
      of a turn's trace says which of the four services it comes from.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not (span.attributes and OPENINFERENCE_KIND in span.attributes):
            kind = next((k for prefix, k in _KIND_BY_SERVICE.items() if span.name.startswith(prefix)),
                        "CHAIN")
            span.set_attribute(OPENINFERENCE_KIND, kind)
        service = span.resource.attributes.get("service.name")
        if isinstance(service, str):
            span.set_attribute("service.name", service)


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


def resource_attributes(service_name: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The attributes voxline sets on top of the SDK's resource detection (which reads
    ``OTEL_RESOURCE_ATTRIBUTES``): its own ``service.name`` always; ``service.namespace`` from
    ``OTEL_SERVICE_NAME`` when that names something else and no namespace is given; and the
    Phoenix project (``openinference.project.name``: the namespace, else "voxline") unless given,
    so the four services' spans land in one project."""
    env = os.environ if environ is None else environ
    attributes = {"service.name": service_name}
    deployment = env.get("OTEL_SERVICE_NAME", "").strip()
    given = {item.split("=", 1)[0].strip(): item.split("=", 1)[-1].strip()
             for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if "=" in item}
    namespace = given.get("service.namespace", "")
    if deployment and deployment != service_name and not namespace:
        attributes["service.namespace"] = namespace = deployment
    if "openinference.project.name" not in given:
        attributes["openinference.project.name"] = namespace or "voxline"
    return attributes


def default_trace_exporters(environ: Mapping[str, str] | None = None) -> list[str]:
    """Exporter entry-point names to add when ``OTEL_TRACES_EXPORTER`` is not set: OTLP (in the
    protocol ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` asks for) when an endpoint is set, else none."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_TRACES_EXPORTER", "").strip():
        return []
    if not any(env.get(name, "").strip() for name in OTLP_ENDPOINT_VARIABLES):
        return []
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    if protocol == "http/protobuf":
        return ["otlp_proto_http"]
    if protocol == "grpc":
        return ["otlp_proto_grpc"]
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")


def _describe_export() -> str:
    """Where spans go, for the start-up log line."""
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip() or ",".join(default_trace_exporters())
    if not exporters or exporters == "none":
        return "none"
    endpoint = next((os.environ[name] for name in OTLP_ENDPOINT_VARIABLES if os.environ.get(name)),
                    "the default endpoint")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    return f"{exporters} ({protocol} to {endpoint})" if "otlp" in exporters else exporters


def _configure_sdk(service_name: str) -> None:
    # The distro's path: the SDK configurator reads every OTEL_* variable itself.
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator

    try:
        _OTelSDKConfigurator().configure(  # type: ignore[no-untyped-call]
            resource_attributes=resource_attributes(service_name),
            trace_exporter_names=default_trace_exporters(),
        )
    except RuntimeError as exc:  # the SDK's word for an unknown exporter, protocol or config file
        raise ConfigError(f"OpenTelemetry configuration: {exc}") from None


def setup_telemetry(service_name: str, *, instrument_grpc: bool = True) -> TracerProvider:
    """Install the global tracer (and meter) provider once per process from the ``OTEL_*``
    environment, add the span file, and instrument grpc.aio. Raises ConfigError for a
    configuration the SDK cannot honour (an unknown exporter or protocol)."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current  # configured by opentelemetry-instrument: keep it
            log.info("tracing configured outside voxline (opentelemetry-instrument); kept")
        else:
            _configure_sdk(service_name)
            installed = trace.get_tracer_provider()
            if not isinstance(installed, TracerProvider):  # pragma: no cover - SDK contract
                raise RuntimeError("the OpenTelemetry SDK did not install a tracer provider")
            provider = installed
            resource = provider.resource.attributes
            log.info("tracing", extra={"service_name": resource.get("service.name"),
                                       "service_namespace": resource.get("service.namespace", ""),
                                       "export": _describe_export()})
        provider.add_span_processor(ViewerAttributes())
        span_file = os.environ.get("VOXLINE_SPAN_FILE")
        if span_file:
            # Simple (synchronous) processor: a span is on disk when it ends, so a file reader
            # never misses spans of a process that was killed.
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(span_file)))
            log.info("writing spans to file", extra={"span_file": span_file})
        if instrument_grpc:
            from opentelemetry.instrumentation.grpc import (
                GrpcAioInstrumentorClient,
                GrpcAioInstrumentorServer,
                filters,
            )

            # Health probes (voxline up, compose, tests poll every 100 ms) and reflection would
            # bury the turns' spans, and a conversation's own streams and control calls would each
            # add a trace beside the turns: they are not traced.
            untraced = filters.negate(filters.any_of(
                filters.health_check(), filters.service_prefix("grpc.reflection"),
                *(filters.full_method_name(name) for name in UNTRACED_METHODS)))
            for instrumentor in (GrpcAioInstrumentorServer(filter_=untraced),  # type: ignore[no-untyped-call]
                                 GrpcAioInstrumentorClient(filter_=untraced)):  # type: ignore[no-untyped-call]
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument()
        _provider = provider
        return provider


def shutdown_telemetry() -> None:
    """Flush and close exporters (called on graceful shutdown)."""
    with _lock:
        if _provider is not None:
            _provider.shutdown()
            meter_provider = metrics.get_meter_provider()
            shutdown = getattr(meter_provider, "shutdown", None)
            if callable(shutdown):
                shutdown()
