"""Reply cache, input errors, configuration errors and key hygiene, through the gRPC server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from fakes.chat_server import DEFAULT_TOKENS, Behaviour, FakeChatServer
from llm_harness import CEREBRAS_KEY, GROQ_KEY, running_gateway, with_
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxline.llm.cache import ReplyCache, normalise
from voxline.llm.config import LlmConfig
from voxline.llm.engine import build_cache

EXPECTED = "".join(DEFAULT_TOKENS)


def test_normalise_folds_case_accents_punctuation_and_spaces() -> None:
    assert normalise("  Ça   VA ?! ") == "ca va"
    assert normalise("Salut !") == normalise("salut") == "salut"
    assert normalise("Qu'est-ce   que c'est…") == "qu est ce que c est"
    assert normalise("?!") == ""


async def test_phrasebook_hit_is_served_without_any_provider(tmp_path: Path, base_config: LlmConfig,
                                                             cerebras_fake: FakeChatServer,
                                                             groq_fake: FakeChatServer) -> None:
    book = tmp_path / "phrases.json"
    book.write_text(json.dumps({"ça va ?": "Ça va bien, merci !", "salut": "Salut !"}), encoding="utf-8")
    config = with_(base_config, cache_max_words=8, cache_file=str(book))
    async with running_gateway(config, cache=build_cache(config)) as gw:
        replies = [await gw.generate("CA VA?") for _ in range(20)]
    reply = replies[-1]
    assert reply.text == "Ça va bien, merci !"
    s = reply.summary
    assert (s.provider, s.model, s.cache_hit, s.finish_reason) == ("cache", "phrasebook", True, "stop")
    assert min(r.summary.total_ms for r in replies) < 1.0  # well under a millisecond of service time
    assert not cerebras_fake.requests and not groq_fake.requests


async def test_learned_reply_is_reused_and_opt_out_bypasses_it(base_config: LlmConfig,
                                                               cerebras_fake: FakeChatServer) -> None:
    config = with_(base_config, cache_max_words=8)
    async with running_gateway(config, cache=build_cache(config)) as gw:
        first = await gw.generate("Salut !")
        second = await gw.generate("salut")
        opted_out = await gw.generate("Salut", no_cache=True)
        other_system = await gw.generate(messages=[("system", "Sois bref."), ("user", "salut")])
    assert first.summary.cache_hit is False and first.summary.provider == "cerebras"
    assert second.summary.cache_hit is True and second.text == first.text == EXPECTED
    assert second.summary.model == "llama3.1-8b"
    assert opted_out.summary.cache_hit is False
    assert other_system.summary.cache_hit is False  # the system prompt is part of the key
    assert len(cerebras_fake.requests) == 3


async def test_a_reply_is_reused_only_for_the_same_stop_strings_and_token_cap(
        base_config: LlmConfig, cerebras_fake: FakeChatServer) -> None:
    config = with_(base_config, cache_max_words=8)
    async with running_gateway(config, cache=build_cache(config)) as gw:
        await gw.generate("salut")
        with_stop = await gw.generate("salut", stop=["."])
        capped = await gw.generate("salut", max_tokens=3)
        again = await gw.generate("salut", stop=["."])
    assert with_stop.summary.cache_hit is False  # its reply may end earlier: not the same answer
    assert capped.summary.cache_hit is False
    assert again.summary.cache_hit is True
    assert len(cerebras_fake.requests) == 3


async def test_long_or_unfinished_replies_are_not_cached(base_config: LlmConfig,
                                                         cerebras_fake: FakeChatServer) -> None:
    config = with_(base_config, cache_max_words=8)
    long_text = "peux-tu me raconter une histoire assez longue sur les dragons ?"
    cerebras_fake.script(Behaviour(), Behaviour(), Behaviour(finish_reason="length"), Behaviour())
    async with running_gateway(config, cache=build_cache(config)) as gw:
        await gw.generate(long_text)
        assert (await gw.generate(long_text)).summary.cache_hit is False
        await gw.generate("merci")  # cut short: finish_reason "length"
        assert (await gw.generate("merci")).summary.cache_hit is False


def test_cache_entries_expire_and_evict() -> None:
    now = [0.0]
    cache = ReplyCache(max_words=8, max_entries=2, ttl_s=10.0, clock=lambda: now[0])
    assert cache.put("un", "", "c", "1", "m") and cache.put("deux", "", "c", "2", "m")
    assert cache.get("un", "", "c") is not None  # "un" is now the most recent
    cache.put("trois", "", "c", "3", "m")
    assert cache.get("deux", "", "c") is None and cache.get("un", "", "c") is not None
    now[0] = 11.0
    assert cache.get("un", "", "c") is None
    assert cache.get("un", "", "other chain") is None


@pytest.mark.parametrize(("messages", "expected"), [
    ([], "messages is empty"),
    ([("user", "   ")], "messages[0].content is empty"),
    ([("robot", "bip")], "messages[0].role is 'robot'"),
    ([("user", "salut"), ("assistant", "bonjour")], "last message must be from 'user'"),
])
async def test_bad_messages_are_invalid_argument(messages: list[tuple[str, str]], expected: str,
                                                 base_config: LlmConfig,
                                                 cerebras_fake: FakeChatServer) -> None:
    async with running_gateway(base_config) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.generate(messages=messages)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in caught.value.details()
        assert (await gw.generate()).text == EXPECTED  # still serving
    assert len(cerebras_fake.requests) == 1


async def test_unknown_provider_and_bad_sampling_are_invalid_argument(base_config: LlmConfig) -> None:
    async with running_gateway(base_config) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.generate(providers=["openai"])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown provider(s) ['openai']" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.generate(temperature=3.0)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_provider_configured_is_failed_precondition(base_config: LlmConfig,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    config = with_(base_config, groq_api_key="", cerebras_api_key="")
    async with running_gateway(config) as gw:
        with caplog.at_level(logging.WARNING, logger="voxline.llm.engine"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.generate()
            with pytest.raises(grpc.aio.AioRpcError):
                await gw.generate()
        infos = {p.name: p for p in await gw.providers()}
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details()
    # the client learns what is wrong; the operator's log says how to fix it (once, not per request)
    assert "no LLM provider is available" in details
    assert "API_KEY" not in details and "--local-model" not in details and "groq" not in details
    (told,) = [r.getMessage() for r in caplog.records if "no LLM provider" in r.getMessage()]
    assert "GROQ_API_KEY" in told and "CEREBRAS_API_KEY" in told and "--local-model" in told
    assert not infos["groq"].available and "set GROQ_API_KEY" in infos["groq"].reason
    assert not infos["local"].available


async def test_unconfigured_provider_in_chain_is_skipped(base_config: LlmConfig) -> None:
    config = with_(base_config, cerebras_api_key="")
    async with running_gateway(config) as gw:
        reply = await gw.generate()
        infos = [(p.name, p.model, p.available) for p in await gw.providers()]
    assert reply.attempts() == [("cerebras", "skipped"), ("groq", "won")]
    assert "CEREBRAS_API_KEY" in reply.summary.attempts[0].reason
    assert infos[:2] == [("cerebras", "llama3.1-8b", False), ("groq", "llama-3.1-8b-instant", True)]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    from voxline.common.telemetry import setup_telemetry

    provider = setup_telemetry("voxline-llm")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    return exporter


async def test_api_keys_never_leak_into_errors_logs_or_spans(
        base_config: LlmConfig, cerebras_fake: FakeChatServer, groq_fake: FakeChatServer,
        caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter) -> None:
    # Both APIs reject the key and echo it back in their error body, as some real APIs do.
    cerebras_fake.script(Behaviour(status=401, error_message="Invalid API key: {auth}"))
    groq_fake.script(Behaviour(status=401, error_message="Invalid API Key {auth}"))
    caplog.set_level(logging.DEBUG)
    async with running_gateway(base_config) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.generate()
        await gw.generate()  # and a successful one, for its span
    assert cerebras_fake.requests[0].authorization == f"Bearer {CEREBRAS_KEY}"  # the key was sent...
    details = caught.value.details()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "HTTP 401" in details
    span_text = repr([(s.name, dict(s.attributes or {}), s.events, s.status.description)
                      for s in spans.get_finished_spans()])
    assert "llm.provider" in span_text  # the spans were captured
    for secret in (CEREBRAS_KEY, GROQ_KEY, "TESTKEY0123456789"):
        assert secret not in details  # ...but never shown to the client,
        assert secret not in caplog.text  # logged,
        assert secret not in span_text  # or put on a span
