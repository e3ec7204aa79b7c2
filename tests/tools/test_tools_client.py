"""Client-side tools over Converse: the session declares them, the orchestrator sends a tool_call
event, the client answers with a tool_result; no answer in time cancels the call; bad tools and
stray results are refused with INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import grpc
import pytest
from fakes.chat_server import Behaviour, FakeChatServer, tool_call
from prometheus_client.parser import text_string_to_metric_families
from tools_harness import running_stack, session

from voxline.common import metrics
from voxline.orchestrator.tools.settings import ToolSettings
from voxline.v1 import llm_pb2, voice_pb2

LOCATION = llm_pb2.ToolDefinition(
    name="get_location", description="Where the user is, from the phone's GPS",
    parameters_json=json.dumps({"type": "object", "properties": {"precise": {"type": "boolean"}}}))


def location_model(body: dict[str, Any]) -> Behaviour:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Behaviour(tokens=(f"You are in {last['content']}.",))
    return tool_call("get_location", {"precise": False}, call_id="call_loc")


async def test_client_tool_round_trip(groq: FakeChatServer) -> None:
    groq.responder = location_model
    async with running_stack(groq, ToolSettings()) as stack:
        conv = stack.conversation()
        await conv.send_config(session(tools=[LOCATION]))
        await conv.send_text("Where am I?")
        events = await conv.read_until("tool_call")
        call = events[-1].tool_call
        assert (call.id, call.name, json.loads(call.arguments_json)) == (
            "call_loc", "get_location", {"precise": False})
        await conv.call.write(voice_pb2.ConverseRequest(tool_result=voice_pb2.ToolResult(
            id=call.id, content="Lyon")))
        rest = await conv.read_until("metrics")
    text = "".join(e.assistant_text.delta for e in rest if e.HasField("assistant_text"))
    assert text == "You are in Lyon."
    assert rest[-1].metrics.status == voice_pb2.COMPLETED and rest[-1].metrics.tool_calls == 1
    assert [t["function"]["name"] for t in groq.requests[0].body["tools"]] == ["get_location"]


async def test_an_unanswered_client_tool_times_out(groq: FakeChatServer) -> None:
    groq.script(tool_call("get_location", {}, call_id="call_loc"))
    groq.responder = lambda body: Behaviour(tokens=(f"Tool said: {body['messages'][-1]['content']}",))
    async with running_stack(groq, ToolSettings(client_tool_timeout_s=0.3, filler_ms=0)) as stack:
        conv = stack.conversation()
        await conv.send_config(session(tools=[LOCATION]))
        await conv.send_text("Where am I?")
        events = await conv.read_until("metrics")
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds.index("tool_call") < kinds.index("tool_call_cancelled")
        cancelled = next(e.tool_call_cancelled for e in events if e.HasField("tool_call_cancelled"))
        assert (cancelled.id, cancelled.reason) == ("call_loc", "timed out")
        assert events[-1].metrics.status == voice_pb2.COMPLETED
        assert "did not answer within 0.3 s" in "".join(
            e.assistant_text.delta for e in events if e.HasField("assistant_text"))
        # the answer that comes too late is ignored; the conversation goes on
        await conv.call.write(voice_pb2.ConverseRequest(tool_result=voice_pb2.ToolResult(
            id="call_loc", content="Lyon")))
        groq.responder = lambda body: Behaviour(tokens=("Still here.",))
        await conv.send_text("Hello?")
        again = await conv.read_until("metrics")
        assert again[-1].metrics.status == voice_pb2.COMPLETED


@pytest.mark.parametrize(("config", "request_", "expected"), [
    (session(tools=[llm_pb2.ToolDefinition(name="bad name")]), None, "tools[0].name"),
    (session(tools=[llm_pb2.ToolDefinition(name="t", parameters_json='{"type": 5}')]), None,
     "not a valid JSON Schema"),
    (session(tools=[LOCATION, LOCATION]), None, "declared twice"),
    (session(tools=[LOCATION]), voice_pb2.ToolResult(id="never-sent", content="x"),
     "answers no tool call"),
    (session(), voice_pb2.ToolResult(id="x", content="x"), "declared no client tools"),
])
async def test_bad_client_tools_are_invalid_argument(groq: FakeChatServer,
                                                     config: voice_pb2.SessionConfig,
                                                     request_: voice_pb2.ToolResult | None,
                                                     expected: str) -> None:
    async with running_stack(groq, ToolSettings()) as stack:
        conv = stack.conversation()
        await conv.send_config(config)
        if request_ is not None:
            await conv.call.write(voice_pb2.ConverseRequest(tool_result=request_))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await conv.read_until("metrics")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (error.value.details() or "")
        # the server keeps serving
        groq.default = Behaviour(tokens=("Hi.",))
        fresh = stack.conversation()
        await fresh.send_config(session())
        await fresh.send_text("Hello")
        assert (await fresh.read_until("metrics"))[-1].metrics.status == voice_pb2.COMPLETED


async def test_each_call_is_an_execute_tool_span(groq: FakeChatServer, spans: Any) -> None:
    groq.responder = location_model
    async with running_stack(groq, ToolSettings()) as stack:
        conv = stack.conversation()
        await conv.send_config(session(tools=[LOCATION]))
        await conv.send_text("Where am I?")
        call = (await conv.read_until("tool_call"))[-1].tool_call
        await conv.call.write(voice_pb2.ConverseRequest(tool_result=voice_pb2.ToolResult(
            id=call.id, content="Lyon")))
        metrics = (await conv.read_until("metrics"))[-1].metrics
    finished = spans.get_finished_spans()
    (tool,) = [s for s in finished if s.name == "execute_tool get_location"]
    attributes = dict(tool.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "get_location"
    assert attributes["gen_ai.tool.call.id"] == "call_loc"
    assert attributes["openinference.span.kind"] == "TOOL"
    assert attributes["voxline.tool.outcome"] == "ok"
    (turn,) = [s for s in finished if s.name == "voxline.turn"]
    assert tool.context.trace_id == turn.context.trace_id  # in the turn's trace
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert format(turn.context.trace_id, "032x") == metrics.trace_id
    assert dict(turn.attributes or {})["voxline.tool.calls"] == 1


async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """This process's Prometheus endpoint (set up once per process: compare before and after)."""
    port = metrics.setup_metrics("voxline-tests", port=0)
    assert port is not None

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_each_call_is_timed_in_a_histogram_per_tool(groq: FakeChatServer) -> None:
    name = "voxline_tool_duration_seconds_count"
    labels = {("gen_ai_tool_name", "get_location"), ("outcome", "ok")}

    def count(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and labels <= ls)

    before = await scrape()
    groq.responder = location_model
    async with running_stack(groq, ToolSettings()) as stack:
        conv = stack.conversation()
        await conv.send_config(session(tools=[LOCATION]))
        await conv.send_text("Where am I?")
        call = (await conv.read_until("tool_call"))[-1].tool_call
        await conv.call.write(voice_pb2.ConverseRequest(tool_result=voice_pb2.ToolResult(
            id=call.id, content="Lyon")))
        await conv.read_until("metrics")
    assert count(await scrape()) - count(before) == 1


async def test_a_barge_in_cancels_a_client_tool_call(groq: FakeChatServer) -> None:
    groq.script(tool_call("get_location", {}, call_id="call_loc"))
    groq.default = Behaviour(tokens=("Okay.",))
    async with running_stack(groq, ToolSettings(filler_ms=0)) as stack:
        conv = stack.conversation()
        await conv.send_config(session(tools=[LOCATION]))
        await conv.send_text("Where am I?")
        await conv.read_until("tool_call")
        await conv.send_text("Forget it")  # barge-in while the client's tool runs
        first = await conv.read_until("metrics")
        cancelled = [e.tool_call_cancelled for e in first if e.HasField("tool_call_cancelled")]
        assert [(c.id, c.reason) for c in cancelled] == [("call_loc", "interrupted")]
        assert first[-1].metrics.status == voice_pb2.INTERRUPTED
        second = await conv.read_until("metrics")
        assert second[-1].metrics.status == voice_pb2.COMPLETED
    messages = groq.requests[-1].body["messages"]
    assert messages[-2]["role"] == "tool" and messages[-2]["content"].startswith("cancelled")
