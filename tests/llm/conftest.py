"""Fixtures for the LLM gateway tests: fake Groq and Cerebras servers, a base configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.chat_server import FakeChatServer
from llm_harness import CEREBRAS_KEY, GROQ_KEY

from voxline.llm.config import LlmConfig


@pytest.fixture(scope="module")
def fake_servers() -> Iterator[tuple[FakeChatServer, FakeChatServer]]:
    with FakeChatServer() as groq, FakeChatServer() as cerebras:
        yield groq, cerebras


@pytest.fixture
def groq_fake(fake_servers: tuple[FakeChatServer, FakeChatServer]) -> FakeChatServer:
    fake_servers[0].reset()
    return fake_servers[0]


@pytest.fixture
def cerebras_fake(fake_servers: tuple[FakeChatServer, FakeChatServer]) -> FakeChatServer:
    fake_servers[1].reset()
    return fake_servers[1]


@pytest.fixture
def base_config(groq_fake: FakeChatServer, cerebras_fake: FakeChatServer) -> LlmConfig:
    """Both remote providers pointed at the fakes, no local model, hedging off."""
    return LlmConfig(
        providers=("cerebras", "groq"),
        groq_api_key=GROQ_KEY, groq_base_url=groq_fake.url,
        cerebras_api_key=CEREBRAS_KEY, cerebras_base_url=cerebras_fake.url,
        request_timeout_s=10.0, ttft_timeout_ms=(("*", 3000.0),),
        hedge_delay="off", local_model="none", cache_max_words=0,
    )
