"""Tool calling through the gateway: the real Groq and Cerebras SDKs parse tool-call deltas from the
fake servers, the gateway relays them, a tool result goes back; hedging asks for a tool once; the
local model is skipped; a reply that used tools is never cached; bad tool definitions are refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest
from fakes.chat_server import Behaviour, FakeChatServer, tool_call
from llm_harness import Reply, collect, running_gateway, with_

from voxline.llm.cache import ReplyCache
from voxline.llm.chat import ChatRequest, Finish
from voxline.llm.config import LlmConfig
from voxline.llm.engine import build_providers
from voxline.v1 import llm_pb2

WEATHER = llm_pb2.ToolDefinition(
    name="get_weather", description="Current weather in a city",
    parameters_json=json.dumps({"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}))


def ask(messages: list[llm_pb2.ChatMessage], **kwargs: Any) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(messages=messages, tools=[WEATHER], **kwargs)


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role="user", content=text)


def calls_of(reply: Reply) -> list[tuple[str, str, dict[str, Any]]]:
    """The complete calls a client assembles from the deltas: (id, name, arguments)."""
    calls: dict[int, list[str]] = {}
    for d in reply.tool_deltas:
        entry = calls.setdefault(d.index, ["", "", ""])
        entry[0] = d.id or entry[0]
        entry[1] = d.name or entry[1]
        entry[2] += d.arguments_delta
    return [(i, n, json.loads(a)) for i, n, a in (calls[k] for k in sorted(calls))]


def answer_with_tool_result(body: dict[str, Any]) -> Behaviour:
    """The fake model: calls the tool, then answers from the tool's result."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        weather = json.loads(last["content"])
        return Behaviour(tokens=("In ", body["messages"][-2]["tool_calls"][0]["function"]["name"],
                                 " terms: ", f"{weather['temp_c']} degrees", "."))
    return tool_call("get_weather", {"city": "Paris"}, call_id="call_42", text=("Let me check.",))


@pytest.mark.parametrize("provider", ["groq", "cerebras"])
async def test_tool_call_round_trip_through_the_sdk(provider: str, base_config: LlmConfig,
                                                    groq_fake: FakeChatServer,
                                                    cerebras_fake: FakeChatServer) -> None:
    fake = groq_fake if provider == "groq" else cerebras_fake
    fake.responder = answer_with_tool_result
    async with running_gateway(base_config) as gw:
        first = await collect(gw.stub.Generate(ask([user("Weather in Paris?")], providers=[provider],
                                                   tool_choice="auto")))
        assert first.text == "Let me check."
        assert calls_of(first) == [("call_42", "get_weather", {"city": "Paris"})]
        assert len(first.tool_deltas) > 2  # the arguments really came in pieces
        assert first.summary.finish_reason == "tool_calls"
        assert first.summary.provider == provider
        sent = fake.requests[0].body
        assert sent["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather in a city",
            "parameters": json.loads(WEATHER.parameters_json)}}]
        assert sent["tool_choice"] == "auto"

        follow_up = [user("Weather in Paris?"),
                     llm_pb2.ChatMessage(role="assistant", content="Let me check.", tool_calls=[
                         llm_pb2.ToolCall(id="call_42", name="get_weather",
                                          arguments_json='{"city": "Paris"}')]),
                     llm_pb2.ChatMessage(role="tool", tool_call_id="call_42",
                                         content='{"temp_c": 18}')]
        second = await collect(gw.stub.Generate(ask(follow_up, providers=[provider])))
    assert second.text == "In get_weather terms: 18 degrees."
    assert second.summary.finish_reason == "stop" and not second.tool_deltas
    wire = fake.requests[1].body["messages"]
    assert wire[1]["tool_calls"] == [{"id": "call_42", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert wire[2] == {"role": "tool", "content": '{"temp_c": 18}', "tool_call_id": "call_42"}


async def test_hedged_request_asks_for_the_tool_once(base_config: LlmConfig,
                                                     cerebras_fake: FakeChatServer,
                                                     groq_fake: FakeChatServer) -> None:
    # both providers would call the tool; the primary only after the hedge already answered
    cerebras_fake.script(tool_call("get_weather", {"city": "Lyon"}, call_id="call_slow",
                                   first_token_delay=5.0))
    groq_fake.script(tool_call("get_weather", {"city": "Lyon"}, call_id="call_fast"))
    async with running_gateway(with_(base_config, hedge_delay="100")) as gw:
        reply = await collect(gw.stub.Generate(ask([user("Weather in Lyon?")])))
    assert calls_of(reply) == [("call_fast", "get_weather", {"city": "Lyon"})]
    assert reply.summary.hedged
    assert reply.attempts() == [("cerebras", "cancelled"), ("groq", "won")]
    loser = cerebras_fake.requests[0]
    assert await asyncio.to_thread(loser.disconnected.wait, 10.0)
    assert not loser.first_token_sent.is_set()  # its call was never even sent


class ToolessLocal:
    """Stands in for the local model: available, but it cannot call tools."""

    name = "local"
    model = "SmolLM2-135M-Instruct"
    available = True
    unavailable_reason = ""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        self.requests.append(request)
        yield "local text"
        yield Finish()

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_local_model_is_skipped_for_tools(base_config: LlmConfig,
                                                groq_fake: FakeChatServer) -> None:
    local = ToolessLocal()
    providers = [*[p for p in build_providers(base_config) if p.name != "local"], local]
    groq_fake.script(tool_call("get_weather", {"city": "Nice"}))
    async with running_gateway(base_config, providers=providers) as gw:
        reply = await collect(gw.stub.Generate(ask([user("Weather in Nice?")],
                                                   providers=["local", "groq"])))
        assert [name for _, name, _ in calls_of(reply)] == ["get_weather"]
        assert reply.attempts() == [("local", "skipped"), ("groq", "won")]
        assert reply.summary.attempts[0].reason == "does not support tools"

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await collect(gw.stub.Generate(ask([user("Weather in Nice?")], providers=["local"])))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "uses tools" in (error.value.details() or "")
        assert "local model does not" in (error.value.details() or "")

        # ListProviders says which providers can call tools
        listed = {p.name: p.supports_tools for p in await gw.providers()}
        assert listed == {"local": False, "groq": True, "cerebras": True}

        # the same request without tools is the local model's to answer
        plain = await collect(gw.stub.Generate(llm_pb2.GenerateRequest(
            messages=[user("Bonjour")], providers=["local"])))
        assert plain.text == "local text"
    assert len(local.requests) == 1 and not local.requests[0].tools


async def test_a_reply_that_used_tools_is_never_cached(base_config: LlmConfig,
                                                       cerebras_fake: FakeChatServer) -> None:
    config = with_(base_config, cache_max_words=20)
    cache = ReplyCache(max_words=20, max_entries=16, ttl_s=600.0)
    cerebras_fake.responder = answer_with_tool_result
    async with running_gateway(config, cache=cache) as gw:
        for _ in range(2):
            reply = await collect(gw.stub.Generate(ask([user("Weather in Paris?")])))
            assert reply.summary.cache_hit is False
            assert calls_of(reply)  # the tool is asked for again, not replayed from a cache
        # and a short plain question in the same gateway is cached as usual
        cerebras_fake.responder = None
        plain = llm_pb2.GenerateRequest(messages=[user("Bonjour")])
        await collect(gw.stub.Generate(plain))
        assert (await collect(gw.stub.Generate(plain))).summary.cache_hit is True
    assert len(cerebras_fake.requests) == 3


@pytest.mark.parametrize(("change", "expected"), [
    ({"tools": [llm_pb2.ToolDefinition(name="get weather!")]}, "tools[0].name"),
    ({"tools": [llm_pb2.ToolDefinition(name="t", parameters_json="{not json")]}, "not JSON"),
    ({"tools": [llm_pb2.ToolDefinition(name="t", parameters_json="[1]")]}, "JSON object"),
    ({"tools": [WEATHER, WEATHER]}, "given twice"),
    ({"tools": [WEATHER], "tool_choice": "book_table"}, "tool_choice"),
    ({"messages": [user("hi"), llm_pb2.ChatMessage(role="tool", content="18")]}, "tool_call_id"),
    ({"messages": [llm_pb2.ChatMessage(role="user", content="hi", tool_calls=[
        llm_pb2.ToolCall(id="c", name="get_weather")])]}, "only an assistant"),
])
async def test_bad_tool_requests_are_invalid_argument(change: dict[str, Any], expected: str,
                                                      base_config: LlmConfig,
                                                      cerebras_fake: FakeChatServer) -> None:
    fields: dict[str, Any] = {"messages": [user("Weather?")], **change}
    async with running_gateway(base_config) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await collect(gw.stub.Generate(llm_pb2.GenerateRequest(**fields)))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (error.value.details() or "")
        assert (await gw.generate("still serving?")).text  # the server keeps serving
    assert len(cerebras_fake.requests) == 1

