"""Fixtures for the tool tests: one fake Groq server per module (reset for each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.chat_server import FakeChatServer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxline.common.telemetry import setup_telemetry


@pytest.fixture(scope="module")
def _groq_server() -> Iterator[FakeChatServer]:
    with FakeChatServer() as server:
        yield server


@pytest.fixture
def groq(_groq_server: FakeChatServer) -> FakeChatServer:
    _groq_server.reset()
    return _groq_server


@pytest.fixture
def cerebras() -> Iterator[FakeChatServer]:
    with FakeChatServer() as server:
        yield server


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
