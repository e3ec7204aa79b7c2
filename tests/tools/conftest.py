"""Fixtures for the tool tests: one fake Groq server per module (reset for each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.chat_server import FakeChatServer


@pytest.fixture(scope="module")
def _groq_server() -> Iterator[FakeChatServer]:
    with FakeChatServer() as server:
        yield server


@pytest.fixture
def groq(_groq_server: FakeChatServer) -> FakeChatServer:
    _groq_server.reset()
    return _groq_server
