"""Fixtures: fake stages on free ports, the real orchestrator pointed at them, a client channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from orchestrator_harness import start_orchestrator

from voxline.common.server import RunningServer
from voxline.common.telemetry import setup_telemetry
from voxline.testing.fake_servers import FakeStack


@pytest.fixture(scope="session")
def _span_exporter() -> InMemorySpanExporter:
    # The process-wide tracer provider (whoever set it up first) gets one in-memory exporter.
    exporter = InMemorySpanExporter()
    setup_telemetry("voxline-tests").add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """Every span finished in this process from now on."""
    _span_exporter.clear()
    return _span_exporter


@pytest.fixture
async def fakes() -> AsyncIterator[FakeStack]:
    stack = await FakeStack().start()
    yield stack
    await stack.stop()


@pytest.fixture
async def orchestrator(fakes: FakeStack) -> AsyncIterator[RunningServer]:
    running = await start_orchestrator(fakes.stt.address, fakes.llm.address, fakes.tts.address)
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(orchestrator: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as ch:
        yield ch
