"""Issue 10 regressions in the gateway: bounded stop sequences, every input counted, short error
texts, the stall timeout, replies without finish_reason, and a saturated local worker that must
not open the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence

import grpc
import pytest
from fakes.chat_server import DEFAULT_TOKENS, Behaviour, FakeChatServer
from llm_harness import running_gateway, with_

from voxline.llm.chat import ChatRequest, Finish
from voxline.llm.config import LlmConfig
from voxline.llm.engine import build_providers
from voxline.llm.local import fit_messages
from voxline.llm.provider import ProviderBusy, current_attempt

EXPECTED = "".join(DEFAULT_TOKENS)


async def _code_and_details(gw: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.generate(**kwargs)  # type: ignore[attr-defined]
    return caught.value.code(), caught.value.details() or ""


async def test_stop_sequences_are_bounded_in_number_and_length(base_config: LlmConfig,
                                                               cerebras_fake: FakeChatServer) -> None:
    async with running_gateway(base_config) as gw:
        code, details = await _code_and_details(gw, stop=["x" * 5000])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "sampling.stop[0] is 5000 characters" in details and len(details) < 200
        code, details = await _code_and_details(gw, stop=["a", "b", "c", "d", "e"])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 4" in details
        assert (await gw.generate(stop=["\n\n", "User:"])).text == EXPECTED  # sane stops still work
    assert [r.body.get("stop") for r in cerebras_fake.requests] == [["\n\n", "User:"]]


async def test_stop_sequences_and_provider_names_count_toward_the_input_limit(
        base_config: LlmConfig, cerebras_fake: FakeChatServer) -> None:
    config = with_(base_config, max_input_chars=100)
    async with running_gateway(config) as gw:
        assert (await gw.generate("x" * 90)).text == EXPECTED
        code, details = await _code_and_details(gw, text="x" * 90, stop=["y" * 16])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "conversation is 106 characters; the limit is 100" in details
    assert len(cerebras_fake.requests) == 1


async def test_error_texts_do_not_echo_large_input(base_config: LlmConfig) -> None:
    async with running_gateway(base_config) as gw:
        code, details = await _code_and_details(gw, messages=[("r" * 10_000, "salut")])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "messages[0].role is 'rrrr" in details and len(details) < 200
        code, details = await _code_and_details(gw, providers=["p" * 10_000])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 300


async def test_a_provider_that_stalls_after_its_first_token_fails_at_the_stall_timeout(
        base_config: LlmConfig, cerebras_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(tokens=["Bonjour", " et", " adieu"], token_delay=8.0))
    config = with_(base_config, stall_timeout_ms=(("*", 300.0),))
    async with running_gateway(config) as gw:
        started = time.monotonic()
        code, details = await _code_and_details(gw)
        elapsed = time.monotonic() - started
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "stalled: no token for 300 ms" in details and "cerebras failed mid-reply" in details
        assert elapsed < 4.0  # not the 10 s HTTP read timeout, nor the 8 s gap
        assert (await gw.generate()).text == EXPECTED  # slow-but-steady replies are unaffected


async def test_slow_steady_tokens_are_not_a_stall(base_config: LlmConfig,
                                                  cerebras_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(token_delay=0.15))
    config = with_(base_config, stall_timeout_ms=(("*", 600.0),))
    async with running_gateway(config) as gw:
        reply = await gw.generate()  # 7 tokens over ~1 s: longer than the stall timeout in total
    assert reply.text == EXPECTED and reply.summary.provider == "cerebras"


async def test_a_complete_reply_without_finish_reason_is_accepted(base_config: LlmConfig,
                                                                  cerebras_fake: FakeChatServer,
                                                                  groq_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(finish_reason=""))
    async with running_gateway(base_config) as gw:
        reply = await gw.generate()
    assert reply.text == EXPECTED
    assert (reply.summary.provider, reply.summary.finish_reason) == ("cerebras", "stop")
    assert reply.attempts() == [("cerebras", "won")] and not groq_fake.requests


class _SaturatedLocal:
    """Stands in for the local provider whose one worker is busy with this gateway's requests."""

    name = "local"
    model = "fake-local"
    available = True
    unavailable_reason = ""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        self.calls += 1
        if self.mode == "refuse":
            raise ProviderBusy("busy: 4 requests already wait for the local model")
        progress = current_attempt.get()
        assert progress is not None, "the router must give each attempt its progress record"
        progress.waiting_for_capacity = True  # queued behind another generation, forever
        await asyncio.Event().wait()
        yield ""  # pragma: no cover

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("mode", ["refuse", "queued"])
async def test_a_saturated_local_worker_does_not_open_the_circuit(mode: str, base_config: LlmConfig,
                                                                  groq_fake: FakeChatServer) -> None:
    local = _SaturatedLocal(mode)
    config = with_(base_config, providers=("local", "groq"), breaker_failures=2,
                   ttft_timeout_ms=(("*", 3000.0), ("local", 200.0)))
    providers = [p for p in build_providers(config) if p.name != "local"] + [local]
    async with running_gateway(config, providers=providers) as gw:
        for _ in range(4):
            reply = await gw.generate()
            assert reply.attempts() == [("local", "busy"), ("groq", "won")]
            assert reply.summary.attempts[0].reason.startswith("busy")
        circuits = {p.name: p.circuit for p in await gw.providers()}
    assert circuits["local"] == "closed" and local.calls == 4  # tried every time, never skipped


def _count(msgs: Sequence[Mapping[str, str]]) -> int:
    """A toy chat template: 3 tokens per message plus one token per character."""
    return sum(3 + len(m["content"]) for m in msgs)


def _tail(text: str, n: int) -> str:
    return text[-n:]


def test_fit_keeps_system_and_drops_oldest_history_first() -> None:
    msgs = [{"role": "system", "content": "S" * 10}]
    for i in range(10):
        msgs += [{"role": "user", "content": f"u{i}" * 5}, {"role": "assistant", "content": f"a{i}" * 5}]
    msgs.append({"role": "user", "content": "now?"})
    fitted, dropped, cut = fit_messages(msgs, 80, _count, _tail)
    assert _count(fitted) <= 80 and not cut
    assert fitted[0]["role"] == "system" and fitted[-1]["content"] == "now?"
    assert fitted[1:-1] == msgs[1 + dropped:-1]  # a suffix of the history: oldest gone first
    assert fit_messages(msgs, 10_000, _count, _tail) == (msgs, 0, False)


def test_fit_cuts_the_start_of_a_last_message_too_long_alone() -> None:
    msgs = [{"role": "user", "content": "old"}, {"role": "user", "content": "中" * 12_000 + "END"}]
    fitted, dropped, cut = fit_messages(msgs, 500, _count, _tail)
    assert dropped == 1 and cut and len(fitted) == 1
    assert _count(fitted) <= 500 and fitted[0]["content"].endswith("中END")
