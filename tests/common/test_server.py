"""The shared bootstrap: health before/after warm-up, reflection, error mapping, graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from voxline.common.config import ServerConfig
from voxline.common.errors import DependencyUnavailable, InvalidInput, LimitExceeded
from voxline.common.grpc_errors import translate_errors
from voxline.common.server import RunningServer, ServiceSpec, start_server

SERVICE = "voxline.test.Echo"


class Echo:
    """A tiny servicer whose methods raise what the request names."""

    @translate_errors
    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return _answer(request)

    @translate_errors
    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        yield _answer(request)


def _answer(request: bytes) -> bytes:
    if request == b"bad":
        raise InvalidInput("the request is bad")
    if request == b"big":
        raise LimitExceeded("too big")
    if request == b"down":
        raise DependencyUnavailable("dependency down")
    if request == b"bug":
        raise ZeroDivisionError("secret internals")
    return b"ok:" + request


def _register(server: grpc.aio.Server) -> None:
    echo = Echo()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(echo.stream),
    })])


@pytest.fixture
async def gated() -> AsyncIterator[tuple[RunningServer, asyncio.Event]]:
    release = asyncio.Event()

    async def warm_up() -> None:
        await release.wait()

    spec = ServiceSpec(name="voxline-test", grpc_services=[SERVICE], register=_register, warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0))
    try:
        yield running, release
    finally:
        await running.stop(0)


async def _health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def test_health_not_serving_until_warm_up_then_serving(
        gated: tuple[RunningServer, asyncio.Event]) -> None:
    running, release = gated
    assert running.port > 0
    assert await _health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _health(running.port, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    warm = asyncio.create_task(running.warm_up())
    release.set()
    await warm
    assert await _health(running.port) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(running.port, SERVICE) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(gated: tuple[RunningServer, asyncio.Event]) -> None:
    running, _ = gated
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = []
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = [s.name for s in reply.list_services_response.service]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


@pytest.mark.parametrize(("payload", "code", "text"), [
    (b"bad", grpc.StatusCode.INVALID_ARGUMENT, "the request is bad"),
    (b"big", grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"),
    (b"down", grpc.StatusCode.UNAVAILABLE, "dependency down"),
    (b"bug", grpc.StatusCode.INTERNAL, "internal error (ZeroDivisionError)"),
])
async def test_errors_map_to_status_codes_and_server_keeps_serving(
        gated: tuple[RunningServer, asyncio.Event], payload: bytes, code: grpc.StatusCode,
        text: str) -> None:
    running, _ = gated
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        stream = channel.unary_stream(f"/{SERVICE}/Stream")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary(payload, timeout=5)
        assert err.value.code() == code
        assert text in (err.value.details() or "")
        assert "secret internals" not in (err.value.details() or "")
        call = stream(payload, timeout=5)
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == code
        assert await unary(b"hi", timeout=5) == b"ok:hi"


async def test_message_size_limit_is_enforced() -> None:
    async def warm_up() -> None:
        return None

    spec = ServiceSpec(name="voxline-test", grpc_services=[SERVICE], register=_register, warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0, max_message_bytes=1024))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(b"x" * 4096, timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await unary(b"small", timeout=5) == b"ok:small"
    finally:
        await running.stop(0)


async def test_stop_flips_health_and_refuses_new_calls(gated: tuple[RunningServer, asyncio.Event]) -> None:
    running, release = gated
    release.set()
    await running.warm_up()
    port = running.port
    await running.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary(b"late", timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
