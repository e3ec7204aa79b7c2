"""Each way a tool call can go wrong has its expected outcome, and the turn still completes: bad
arguments (not run), a tool error, a timeout (cancelled at the server), too many rounds (the last
request forbids tools; a call asked for then is not run), a dead server (restarted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakes.chat_server import Behaviour, FakeChatServer, tool_call
from tools_harness import (
    calls_in,
    running_stack,
    session,
    stdio_config,
    text_turn,
    wait_for_event,
)

from voxline.orchestrator.tools.settings import ToolSettings
from voxline.v1 import voice_pb2


def echo_result(body: dict[str, Any]) -> Behaviour:
    """Reads the tool result back to the user (so the test sees what the model was told)."""
    return Behaviour(tokens=(f"Result: {body['messages'][-1]['content']}",))


async def one_turn(groq: FakeChatServer, tmp_path: Path, tools: ToolSettings | None = None,
                   text: str = "Check my order") -> tuple[Any, Path]:
    events = tmp_path / "events.log"
    config = stdio_config(tmp_path / "mcp.json", events)
    settings = tools or ToolSettings()
    settings = ToolSettings(**{**settings.__dict__, "mcp_config": str(config)})
    async with running_stack(groq, settings) as stack:
        conv = stack.conversation()
        await conv.send_config(session())
        turn = await text_turn(conv, text)
    return turn, events


async def test_bad_arguments_are_not_run_and_the_model_is_told(groq: FakeChatServer,
                                                              tmp_path: Path) -> None:
    groq.script(tool_call("lookup_order", {"order": 42}, call_id="c1"))  # wrong name and type
    groq.default = Behaviour(tokens=("Sorry, which order?",))
    turn, events = await one_turn(groq, tmp_path)
    assert turn.metrics.status == voice_pb2.COMPLETED
    assert turn.text == "Sorry, which order?"
    told = groq.requests[1].body["messages"][-1]
    assert told["role"] == "tool" and "invalid arguments for lookup_order" in told["content"]
    assert "'order_id' is a required property" in told["content"]
    assert calls_in(events) == []  # never reached the server


async def test_a_tool_error_becomes_a_result_for_the_model(groq: FakeChatServer,
                                                           tmp_path: Path) -> None:
    groq.script(tool_call("broken", {}, call_id="c1"))
    groq.responder = echo_result
    turn, events = await one_turn(groq, tmp_path)
    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    assert turn.text == "Result: Error executing tool broken: the database is down"
    assert calls_in(events) == ["call broken"]


async def test_a_tool_that_times_out_is_cancelled_and_reported(groq: FakeChatServer,
                                                               tmp_path: Path) -> None:
    groq.script(tool_call("slow_search", {"query": "x", "seconds": 60}, call_id="c1"))
    groq.responder = echo_result
    turn, events = await one_turn(groq, tmp_path, ToolSettings(tool_timeout_s=0.5, filler_ms=0))
    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    assert turn.text == "Result: error: slow_search did not answer within 0.5 s; the call was cancelled"
    await wait_for_event(events, "cancelled slow_search")


async def test_too_many_rounds(groq: FakeChatServer, tmp_path: Path) -> None:
    # a model that never stops calling the tool
    groq.responder = lambda body: tool_call("lookup_order", {"order_id": "A1"},
                                            call_id=f"c{len(body['messages'])}",
                                            text=("Checking.",) if body.get("tool_choice") == "none"
                                            else ())
    turn, events = await one_turn(groq, tmp_path, ToolSettings(max_tool_rounds=2))
    m = turn.metrics
    assert m.status == voice_pb2.COMPLETED, m.error
    assert m.tool_calls == 2
    assert calls_in(events) == ["call lookup_order A1"] * 2  # the third call was not run
    assert [r.body.get("tool_choice") for r in groq.requests] == [None, None, "none"]
    assert turn.text == "Checking."


async def test_the_same_call_id_is_run_once(groq: FakeChatServer, tmp_path: Path) -> None:
    # the model repeats a call it already made (same id): the recorded result is reused
    groq.script(tool_call("lookup_order", {"order_id": "A1"}, call_id="same"),
                tool_call("lookup_order", {"order_id": "A1"}, call_id="same"))
    groq.default = Behaviour(tokens=("Shipped.",))
    turn, events = await one_turn(groq, tmp_path)
    assert turn.metrics.status == voice_pb2.COMPLETED
    assert calls_in(events) == ["call lookup_order A1"]
    results = [m for m in groq.requests[2].body["messages"] if m["role"] == "tool"]
    assert len(results) == 2 and json.loads(results[0]["content"]) == json.loads(results[1]["content"])
