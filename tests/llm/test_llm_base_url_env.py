"""The providers' SDK variables GROQ_BASE_URL and CEREBRAS_BASE_URL are honoured, below the
--*-base-url flag and the VOXLINE_LLM_* variable; a request really goes there."""

from __future__ import annotations

import pytest
from fakes.chat_server import FakeChatServer
from llm_harness import GROQ_KEY, running_gateway

from voxline.llm.config import parse

VARIABLES = ("GROQ_BASE_URL", "CEREBRAS_BASE_URL", "VOXLINE_LLM_GROQ_BASE_URL",
             "VOXLINE_LLM_CEREBRAS_BASE_URL")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("provider", ["groq", "cerebras"])
def test_precedence_flag_then_voxline_variable_then_sdk_variable(
        provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sdk, ours, flag = f"{provider.upper()}_BASE_URL", f"VOXLINE_LLM_{provider.upper()}_BASE_URL", \
        f"--{provider}-base-url"

    def url() -> str:
        return str(getattr(parse(argv), f"{provider}_base_url"))

    argv: list[str] = []
    default = url()
    assert default.startswith("https://api.")
    monkeypatch.setenv(sdk, "http://sdk.example:8080/")
    assert url() == "http://sdk.example:8080"
    monkeypatch.setenv(ours, "http://voxline.example:9090")
    assert url() == "http://voxline.example:9090"
    argv = [flag, "http://flag.example"]
    assert url() == "http://flag.example"
    monkeypatch.setenv(sdk, "   ")
    monkeypatch.delenv(ours)
    argv = []
    assert url() == default  # blank is unset


async def test_groq_base_url_sends_the_request_to_that_host(
        groq_fake: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_BASE_URL", groq_fake.url)
    monkeypatch.setenv("GROQ_API_KEY", GROQ_KEY)
    config = parse(["--providers", "groq", "--local-model", "none", "--hedge-delay-ms", "off"])
    assert config.groq_base_url == groq_fake.url
    async with running_gateway(config) as gateway:
        reply = await gateway.generate()
    assert reply.attempts() == [("groq", "won")]
    assert len(groq_fake.requests) == 1
    assert groq_fake.requests[0].authorization == f"Bearer {GROQ_KEY}"
