"""Tools from real MCP servers (written with the SDK) over stdio and streamable HTTP, in spoken
turns: the real LLM gateway parses the fake Groq's tool-call deltas with the real SDK, the
orchestrator runs the call, feeds the result back, and the reply that uses it is spoken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakes.chat_server import Behaviour, FakeChatServer, tool_call
from tools_harness import (
    CEREBRAS_KEY,
    EXAMPLE_CONFIG,
    GROQ_KEY,
    calls_in,
    events_of,
    http_config,
    http_mcp_server,
    running_stack,
    session,
    stdio_config,
    text_turn,
    wait_for_event,
)

from voxline.llm.config import LlmConfig
from voxline.orchestrator.tools.settings import ToolSettings
from voxline.v1 import voice_pb2


def offered(body: dict[str, Any]) -> list[str]:
    return sorted(t["function"]["name"] for t in body.get("tools", []))


def weather_model(body: dict[str, Any]) -> Behaviour:
    """Asks for the weather first; then answers from the tool's result."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        weather = json.loads(last["content"])
        return Behaviour(tokens=(f"It is {weather['temp_c']} degrees", f" with {weather['condition']}."))
    return tool_call("get_weather", {"city": "Paris"}, call_id="call_w1", text=("Let me check.",))


async def test_spoken_turn_calls_the_example_server_over_stdio(groq: FakeChatServer) -> None:
    groq.responder = weather_model
    async with running_stack(groq, ToolSettings(mcp_config=str(EXAMPLE_CONFIG))) as stack:
        conv = stack.conversation()
        await conv.send_config(session())
        turn = await text_turn(conv, "What's the weather in Paris?")
    m = turn.metrics
    assert m.status == voice_pb2.COMPLETED, m.error
    assert turn.text == "Let me check. It is 14 degrees with light rain."
    assert turn.audio
    assert m.tool_calls == 1 and m.tool_ms > 0
    # "Let me check." was spoken on its own, before the tool ran; then the answer
    assert stack.tts.texts == ["Let me check.", "It is 14 degrees with light rain."]
    first, second = (r.body for r in groq.requests)
    assert offered(first) == ["get_time", "get_weather"]
    assert [m["role"] for m in second["messages"]][-2:] == ["assistant", "tool"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(second["messages"][-1]["content"])["condition"] == "light rain"


def order_model(body: dict[str, Any]) -> Behaviour:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Behaviour(tokens=(f"Your order: {json.loads(last['content'])['status']}.",))
    return tool_call("lookup_order", {"order_id": "A1"}, call_id="call_o1")


async def test_streamable_http_server(groq: FakeChatServer, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    groq.responder = order_model
    async with http_mcp_server(events) as url:
        config = http_config(tmp_path / "mcp.json", url)
        async with running_stack(groq, ToolSettings(mcp_config=str(config))) as stack:
            conv = stack.conversation()
            await conv.send_config(session())
            turn = await text_turn(conv, "Where is my order A1?")
    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    assert turn.text == "Your order: shipped."
    assert offered(groq.requests[0].body) == ["broken", "crash", "lookup_order", "slow_search",
                                              "unlock_extra"]
    assert calls_in(events) == ["call lookup_order A1"]  # run once


async def test_slow_tool_gets_a_filler_and_a_barge_in_cancels_it(groq: FakeChatServer,
                                                                tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    config = stdio_config(tmp_path / "mcp.json", events)
    groq.script(tool_call("slow_search", {"query": "red shoes", "seconds": 60}, call_id="call_s1"))
    groq.default = Behaviour(tokens=("Sure, what else?",))
    tools = ToolSettings(mcp_config=str(config), filler_ms=100, tool_timeout_s=120)
    async with running_stack(groq, tools) as stack:
        conv = stack.conversation()
        await conv.send_config(session(language="en"))
        await conv.send_text("Find red shoes")
        before = await conv.read_until("audio")  # the filler, spoken while the tool runs
        assert "".join(e.assistant_text.delta for e in before) == "One moment. "
        assert stack.tts.texts == ["One moment."]
        await wait_for_event(events, "started slow_search")
        await conv.send_text("Actually, never mind")  # barge-in
        first = await conv.read_until("metrics")
        assert first[-1].metrics.status == voice_pb2.INTERRUPTED
        assert first[-1].metrics.tool_calls == 1
        await wait_for_event(events, "cancelled slow_search")  # the MCP server saw it
        second = await conv.read_until("metrics")
        assert second[-1].metrics.status == voice_pb2.COMPLETED
    assert "finished slow_search" not in events_of(events)
    # the next turn's prompt keeps the call, and says it was cancelled
    messages = groq.requests[-1].body["messages"]
    assert messages[-3]["tool_calls"][0]["function"]["name"] == "slow_search"
    assert messages[-2]["role"] == "tool" and messages[-2]["content"].startswith("cancelled")
    assert messages[-1] == {"role": "user", "content": "Actually, never mind"}


async def test_a_hedged_request_runs_the_tool_once(groq: FakeChatServer, cerebras: FakeChatServer,
                                                   tmp_path: Path) -> None:
    # the primary (Cerebras) is slow and would call the tool too; the hedge (Groq) wins
    events = tmp_path / "events.log"
    config = stdio_config(tmp_path / "mcp.json", events)
    cerebras.script(tool_call("lookup_order", {"order_id": "A1"}, call_id="call_slow",
                              first_token_delay=5.0))
    groq.script(tool_call("lookup_order", {"order_id": "A1"}, call_id="call_fast"))
    cerebras.default = groq.default = Behaviour(tokens=("It has shipped.",))
    llm = LlmConfig(providers=("cerebras", "groq"), groq_api_key=GROQ_KEY, groq_base_url=groq.url,
                    cerebras_api_key=CEREBRAS_KEY, cerebras_base_url=cerebras.url,
                    request_timeout_s=10.0, hedge_delay="100", local_model="none",
                    cache_max_words=0)
    async with running_stack(groq, ToolSettings(mcp_config=str(config)), llm_config=llm) as stack:
        conv = stack.conversation()
        await conv.send_config(session())
        turn = await text_turn(conv, "Where is my order A1?")
    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    assert turn.metrics.tool_calls == 1
    assert calls_in(events) == ["call lookup_order A1"]  # once, not once per provider
    assert not cerebras.requests[0].first_token_sent.is_set()  # the loser's call never came out
    # the result went back under the winner's call id
    results = [m for r in [*groq.requests, *cerebras.requests] for m in r.body["messages"]
               if m["role"] == "tool"]
    assert results and {m["tool_call_id"] for m in results} == {"call_fast"}
