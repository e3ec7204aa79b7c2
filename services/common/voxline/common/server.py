"""The grpc.aio server bootstrap every voxline service runs on.

``serve()`` does, in order: telemetry (instrumenting grpc before the server exists), the server
with message size limits, the standard health service (NOT_SERVING), reflection, the service's own
servicers, bind (port 0 picks a free port, which is logged and, with ``--port-file``, written to
that file), start, warm-up (health stays NOT_SERVING until the engine is loaded and warm), SERVING,
then wait for SIGTERM/SIGINT. On a signal: health flips to NOT_SERVING, the server stops accepting
calls, in-flight calls get the grace period, the service's own close hook runs, spans are flushed,
and ``serve`` returns (exit status 0).

Every service's ``__main__`` has the same shape: ``config.parse(argv)`` (a ``ConfigError`` is
refused with ``voxline.common.config.refuse``), then ``run_service(lambda: build_spec(config),
config)``, ``build_spec`` living in the service's ``wiring`` module.
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voxline.common.config import ConfigError, ServerConfig, describe, read_config_file, read_token_file
from voxline.common.decode_guard import MalformedRequestInterceptor
from voxline.common.logs import setup_logging
from voxline.common.metrics import ActiveRequestsInterceptor, setup_metrics, shutdown_metrics
from voxline.common.telemetry import setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)

#: Logged once the port is bound (for people; programs read ``--port-file``).
LISTENING_MESSAGE = "listening"

#: On a graceful stop, seconds between NOT_SERVING and refusing new calls.
DRAIN_NOTICE_S = 0.5

#: Services callable without a token, so health probes and ``grpcurl list`` keep working.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                  "/grpc.reflection.v1.ServerReflection/")


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects every call without ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED),
    except the health and reflection services."""

    MESSAGE = "missing or invalid bearer token"

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def _authorized(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else str(value).encode()
                # The scheme name is case-insensitive (RFC 7235 §2.1): "bearer x" is "Bearer x".
                scheme, _, credentials = given.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                # Constant time: the comparison must not reveal how much of a guess was right.
                return hmac.compare_digest(credentials.lstrip(b" "), self._expected)
        return False

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        if method.startswith(_OPEN_SERVICES) or self._authorized(metadata):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: UNIMPLEMENTED, as without auth
        return _aborting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, self.MESSAGE)


def _aborting_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
                      message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that fails every call at once (a
    unary handler in place of a streaming one would make the server wait for a request)."""
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(code, message)
        # Never reached (abort raises); the yield makes this an async generator, which streaming
        # handlers must be once the telemetry interceptor wraps them.
        yield None

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort)


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files, or None for a plaintext port."""
    if not config.tls_cert:
        return None
    cert = read_config_file(config.tls_cert, "--tls-cert")
    key = read_config_file(config.tls_key, "--tls-key")
    client_ca = (read_config_file(config.tls_client_ca, "--tls-client-ca")
                 if config.tls_client_ca else None)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


@dataclass
class ServiceSpec:
    """What one service plugs into the bootstrap."""

    #: Short name used in logs and as the OpenTelemetry service name, e.g. "voxline-stt".
    name: str
    #: Fully qualified gRPC service names, e.g. ["voxline.v1.SpeechToText"], for health/reflection.
    grpc_services: Sequence[str]
    #: Adds the servicers to the server.
    register: Callable[[grpc.aio.Server], None]
    #: Loads and warms the engine; health turns SERVING when it returns.
    warm_up: Callable[[], Awaitable[None]]
    #: Releases the engine after the server has stopped (optional).
    close: Callable[[], Awaitable[None]] | None = None
    #: Called once a graceful stop begins, before the grace period: long streams finish what they
    #: are doing and end cleanly instead of being held to the end of the grace (optional).
    drain: Callable[[], None] | None = None
    #: Extra server interceptors (optional).
    interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=list)


class RunningServer:
    """A started server: its bound port, its health servicer and a way to stop it."""

    def __init__(self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer,
                 spec: ServiceSpec, config: ServerConfig) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer
        self._spec = spec
        self._config = config
        self.ready = asyncio.Event()
        self._stopped = False

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *self._spec.grpc_services]:
            await self.health.set(name, status)

    async def warm_up(self) -> None:
        """Run the service's warm-up, then report SERVING."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._spec.warm_up()
        await self.set_serving(True)
        self.ready.set()
        log.info("serving", extra={"service": self._spec.name,
                                   "warm_up_s": round(loop.time() - started, 3)})

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, refuse new calls, let in-flight ones finish, close engine."""
        if self._stopped:
            return
        self._stopped = True
        grace = self._config.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        log.info("stopping", extra={"service": self._spec.name, "grace_s": grace})
        if self._spec.drain is not None:
            self._spec.drain()
        if grace > 0:
            # Clients that watch health (the orchestrator's stage channels) move their new calls to
            # other replicas before the server stops taking them: a call that reaches a stopping
            # gRPC server can hang until the grace ends (https://github.com/grpc/grpc/issues/41785).
            await asyncio.sleep(min(DRAIN_NOTICE_S, grace))
        await self.server.stop(grace)
        if self._spec.close is not None:
            await self._spec.close()
        log.info("stopped", extra={"service": self._spec.name})


async def start_server(spec: ServiceSpec, config: ServerConfig) -> RunningServer:
    """Create, bind and start the server (health NOT_SERVING); does not warm up."""
    setup_telemetry(spec.name)
    metrics_port = setup_metrics(spec.name, port=config.metrics_port, host=config.host)
    if config.metrics_port_file and metrics_port is not None:
        write_port_file(config.metrics_port_file, metrics_port)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if config.max_connection_age_s > 0:
        # GOAWAY after this age (calls in flight finish): clients reconnect, re-resolve DNS, and new
        # replicas get their share of calls.
        options.append(("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)))
    credentials = _server_credentials(config)
    # MalformedRequestInterceptor: bytes that are not the method's protobuf get INVALID_ARGUMENT
    interceptors = [MalformedRequestInterceptor(), ActiveRequestsInterceptor(), *spec.interceptors]
    if config.auth_token_file:
        token = read_token_file(config.auth_token_file, "--auth-token-file")
        interceptors.insert(0, BearerTokenInterceptor(token))
    server = grpc.aio.server(options=options, interceptors=interceptors)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    spec.register(server)
    reflection.enable_server_reflection(
        [*spec.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{config.host}:{config.port}"
    try:
        port = (server.add_insecure_port(address) if credentials is None
                else server.add_secure_port(address, credentials))
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the port is in use (another voxline?) or the "
                          "host is not this machine's; choose another with --port N (0: a free port)")
    if config.port_file:
        write_port_file(config.port_file, port)
    running = RunningServer(server, port, health_servicer, spec, config)
    await running.set_serving(False)
    await server.start()
    tls = "off" if credentials is None else "mutual" if config.tls_client_ca else "on"
    log.info(LISTENING_MESSAGE, extra={"service": spec.name, "host": config.host, "port": port,
                                       "metrics_port": metrics_port,
                                       "tls": tls, "auth": "token" if config.auth_token_file else "off"})
    return running


async def serve(spec: ServiceSpec, config: ServerConfig,
                on_started: Callable[[RunningServer], None] | None = None) -> None:
    """Run a service until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(spec, config)
    if on_started is not None:
        on_started(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    warm = asyncio.create_task(running.warm_up(), name=f"{spec.name}-warm-up")
    stopper = asyncio.create_task(stop.wait(), name=f"{spec.name}-signal")
    try:
        done, _ = await asyncio.wait({warm, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if warm in done:
            warm.result()  # a failed warm-up ends the process with its error
            await stopper
    finally:
        for task in (warm, stopper):
            if not task.done():
                task.cancel()
        await asyncio.gather(warm, stopper, return_exceptions=True)
        await running.stop()
        shutdown_metrics()
        shutdown_telemetry()


_PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """When a supervisor (``voxline up``, the bench) set ``VOXLINE_PARENT_PID``, ask Linux to send
    this process SIGTERM when that supervisor dies, so no service outlives it (graceful shutdown
    then runs as for any SIGTERM). No-op elsewhere."""
    raw = os.environ.get("VOXLINE_PARENT_PID", "")
    if not raw.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() != int(raw):  # the supervisor died before prctl took effect
        log.warning("supervisor already gone; exiting", extra={"parent_pid": raw})
        os.kill(os.getpid(), signal.SIGTERM)


def write_port_file(path: str, port: int) -> None:
    """The port-file format: the bound port in decimal and a newline, nothing else. The file is
    replaced atomically, so a reader sees no file or the whole number, never a part of it."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text(f"{port}\n", encoding="ascii")
    os.replace(partial, target)


def read_port_file(path: Path) -> int | None:
    """The port a service wrote with ``write_port_file``, or None while there is no file yet."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{path} holds no port: {text!r}")
    return port


class ServiceConfig(Protocol):
    """A service's frozen configuration: its own settings and its server's."""

    @property
    def server(self) -> ServerConfig: ...


def run_service(build_spec: Callable[[], ServiceSpec], config: ServiceConfig) -> int:
    """What every service's ``__main__`` runs once its configuration is parsed: logging set up, the
    configuration logged (one "config" event, secrets masked), then ``run``; the exit status."""
    setup_logging(config.server.log_level, config.server.log_format)
    log.info("config", extra={"config": describe(config)})
    return run(build_spec, config.server)


def run(spec_factory: Callable[[], ServiceSpec], config: ServerConfig) -> int:
    """Run ``serve`` in a fresh event loop (the spec is built inside it); return the exit status."""
    exit_with_parent()
    async def main() -> None:
        await serve(spec_factory(), config)

    try:
        asyncio.run(main())
    except ConfigError as exc:  # a setting that cannot work (port in use, model missing): no traceback
        log.error("cannot start: %s", exc)
        return 2
    except Exception:
        log.exception("service failed")
        return 1
    return 0
