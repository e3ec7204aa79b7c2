"""The gateway over the real Groq and Cerebras SDKs, against fake provider servers.

Streaming, fallback (429, 500, first-token timeout, disconnects), hedging, the circuit breaker and
cancellation, each observed from the client (gRPC) and from the provider's side (the fake server).
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from fakes.chat_server import DEFAULT_TOKENS, GROQ_PATH, Behaviour, FakeChatServer
from llm_harness import CEREBRAS_KEY, GROQ_KEY, FakeClock, request, running_gateway, with_

from voxline.llm.config import LlmConfig

EXPECTED = "".join(DEFAULT_TOKENS)


async def wait_event(event: threading.Event, within_s: float = 10.0) -> bool:
    return await asyncio.to_thread(event.wait, within_s)


async def test_streams_cerebras_reply_through_the_sdk(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                                      groq_fake: FakeChatServer) -> None:
    async with running_gateway(base_config) as gw:
        reply = await gw.generate("Bonjour !", temperature=0.3, max_tokens=50)
    assert reply.deltas == list(DEFAULT_TOKENS)  # one delta per provider chunk, in order
    s = reply.summary
    assert (s.provider, s.model, s.finish_reason, s.cache_hit) == ("cerebras", "llama3.1-8b", "stop", False)
    assert s.usage.completion_tokens == len(DEFAULT_TOKENS) and s.usage.prompt_tokens > 0
    assert 0 < s.time_to_first_token_ms <= s.total_ms
    assert reply.attempts() == [("cerebras", "won")]
    assert not groq_fake.requests
    (sent,) = cerebras_fake.requests
    assert sent.authorization == f"Bearer {CEREBRAS_KEY}"
    assert sent.body["stream"] is True and sent.body["model"] == "llama3.1-8b"
    assert sent.body["temperature"] == pytest.approx(0.3) and sent.body["max_completion_tokens"] == 50
    assert sent.body["messages"] == [{"role": "user", "content": "Bonjour !"}]


async def test_request_can_pick_groq(base_config: LlmConfig, groq_fake: FakeChatServer) -> None:
    async with running_gateway(base_config) as gw:
        reply = await gw.generate(providers=["groq"])
    assert reply.text == EXPECTED
    assert (reply.summary.provider, reply.summary.model) == ("groq", "llama-3.1-8b-instant")
    assert reply.summary.usage.completion_tokens == len(DEFAULT_TOKENS)  # from x_groq.usage
    (sent,) = groq_fake.requests
    assert sent.path == GROQ_PATH and sent.authorization == f"Bearer {GROQ_KEY}"


@pytest.mark.parametrize("status", [429, 500])
async def test_falls_back_on_http_error(status: int, base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                       groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(status=status, error_message="slow down"))
    async with running_gateway(base_config) as gw:
        reply = await gw.generate()
    assert reply.text == EXPECTED and reply.summary.provider == "groq"
    assert reply.attempts() == [("cerebras", "failed"), ("groq", "won")]
    assert f"HTTP {status}" in reply.summary.attempts[0].reason
    assert len(cerebras_fake.requests) == 1  # max_retries=0: no silent SDK retry


async def test_falls_back_when_first_token_is_late(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                                   groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(hang=True))
    config = with_(base_config, ttft_timeout_ms=(("*", 3000.0), ("cerebras", 300.0)))
    async with running_gateway(config) as gw:
        reply = await gw.generate()
        assert reply.summary.provider == "groq" and reply.text == EXPECTED
        assert "no first token within 300 ms" in reply.summary.attempts[0].reason
        # the abandoned request was really closed, not left hanging at the provider
        assert await wait_event(cerebras_fake.requests[0].disconnected)


async def test_falls_back_on_disconnect_before_first_token(base_config: LlmConfig,
                                                           cerebras_fake: FakeChatServer,
                                                           groq_fake: FakeChatServer) -> None:
    # headers and the role chunk arrive, then the connection drops before any text
    cerebras_fake.script(Behaviour(disconnect_after=0))
    async with running_gateway(base_config) as gw:
        reply = await gw.generate()
    assert reply.text == EXPECTED
    assert reply.attempts() == [("cerebras", "failed"), ("groq", "won")]


async def test_disconnect_mid_reply_fails_without_splicing(base_config: LlmConfig,
                                                           cerebras_fake: FakeChatServer,
                                                           groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(disconnect_after=2))
    async with running_gateway(base_config) as gw:
        call = gw.stub.Generate(request())
        deltas = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in call:
                deltas.append(message.text_delta)
    assert deltas == list(DEFAULT_TOKENS[:2])  # what was sent stays sent
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cerebras failed mid-reply" in caught.value.details()
    assert not groq_fake.requests  # nothing spliced onto a half-sent reply


async def test_all_providers_failing_is_unavailable_with_each_reason(
        base_config: LlmConfig, cerebras_fake: FakeChatServer, groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(status=500, error_message="boom"))
    groq_fake.script(Behaviour(status=429, error_message="rate limited"))
    async with running_gateway(base_config) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.generate()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = caught.value.details()
    assert "cerebras: failed (HTTP 500" in details and "boom" in details
    assert "groq: failed (HTTP 429" in details and "rate limited" in details


async def test_hedge_winner_streams_and_loser_is_cancelled(base_config: LlmConfig,
                                                           cerebras_fake: FakeChatServer,
                                                           groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(first_token_delay=5.0))  # slow, but would answer in the end
    config = with_(base_config, hedge_delay="100")
    async with running_gateway(config) as gw:
        reply = await gw.generate()
        assert reply.text == EXPECTED
        s = reply.summary
        assert s.provider == "groq" and s.hedged
        assert reply.attempts() == [("cerebras", "cancelled"), ("groq", "won")]
        assert "lost the race to groq" in s.attempts[0].reason
        assert 100 <= s.time_to_first_token_ms < 5000
        loser = cerebras_fake.requests[0]
        assert await wait_event(loser.disconnected)  # its HTTP stream was closed
        assert not loser.first_token_sent.is_set()


async def test_no_hedge_when_first_token_is_quick(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                                  groq_fake: FakeChatServer) -> None:
    config = with_(base_config, hedge_delay="10000")
    async with running_gateway(config) as gw:
        reply = await gw.generate()
    assert not reply.summary.hedged and reply.attempts() == [("cerebras", "won")]
    assert not groq_fake.requests


async def test_auto_hedge_learns_from_recent_ttfts(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                                   groq_fake: FakeChatServer) -> None:
    config = with_(base_config, hedge_delay="auto", hedge_floor_ms=100.0, hedge_ceiling_ms=5000.0)
    async with running_gateway(config) as gw:
        for _ in range(5):  # quick replies: the p90 TTFT, clamped to the 100 ms floor
            assert (await gw.generate()).summary.hedged is False
        cerebras_fake.script(Behaviour(first_token_delay=5.0))
        reply = await gw.generate()
    assert reply.summary.hedged and reply.summary.provider == "groq"
    assert reply.summary.time_to_first_token_ms < 2500  # hedged at ~100 ms, not the 5 s ceiling


async def test_circuit_opens_skips_and_half_opens(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                                  groq_fake: FakeChatServer) -> None:
    cerebras_fake.reset(Behaviour(status=500))
    clock = FakeClock()
    config = with_(base_config, breaker_failures=2, breaker_cooldown_s=30.0)
    async with running_gateway(config, clock=clock) as gw:
        for _ in range(2):
            assert (await gw.generate()).attempts() == [("cerebras", "failed"), ("groq", "won")]
        reply = await gw.generate()
        assert reply.attempts() == [("cerebras", "skipped"), ("groq", "won")]
        assert "circuit open" in reply.summary.attempts[0].reason
        assert len(cerebras_fake.requests) == 2  # the open circuit sent nothing
        circuits = {p.name: p.circuit for p in await gw.providers()}
        assert circuits == {"cerebras": "open", "groq": "closed", "local": "closed"}

        clock.advance(31)  # cool-down over: one trial request goes through
        cerebras_fake.default = Behaviour()
        reply = await gw.generate()
        assert reply.attempts() == [("cerebras", "won")]
        assert {p.name: p.circuit for p in await gw.providers()}["cerebras"] == "closed"


async def test_failed_half_open_trial_reopens(base_config: LlmConfig, cerebras_fake: FakeChatServer,
                                              groq_fake: FakeChatServer) -> None:
    cerebras_fake.reset(Behaviour(status=500))
    clock = FakeClock()
    config = with_(base_config, breaker_failures=1, breaker_cooldown_s=10.0)
    async with running_gateway(config, clock=clock) as gw:
        await gw.generate()
        clock.advance(11)
        assert (await gw.generate()).attempts() == [("cerebras", "failed"), ("groq", "won")]
        assert (await gw.generate()).attempts() == [("cerebras", "skipped"), ("groq", "won")]
    assert len(cerebras_fake.requests) == 2


async def test_cancelled_call_closes_provider_stream(base_config: LlmConfig, cerebras_fake: FakeChatServer
                                                     ) -> None:
    cerebras_fake.script(Behaviour(tokens=["mot "] * 50, token_delay=0.2))
    async with running_gateway(base_config) as gw:
        call = gw.stub.Generate(request())
        first = await call.read()
        assert first.text_delta == "mot "
        call.cancel()
        record = cerebras_fake.requests[0]
        assert await wait_event(record.disconnected)
        assert record.tokens_sent < 50
        assert {p.name: p.circuit for p in await gw.providers()}["cerebras"] == "closed"
