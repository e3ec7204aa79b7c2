"""The tool loop of one reply: call the LLM, run the calls it asks for, feed the results back, and
call it again, until it answers in words.

What the turn sees (``reply_stream``): text deltas and LLM summaries, as without tools, plus
``SpeakNow`` markers: "speak what was written so far now" (text the LLM wrote before its tool
call, "Let me check.") and, when a call runs longer than ``filler_ms`` and nothing has been said
yet in the turn, a filler phrase to speak.

Rules:
- at most ``max_tool_rounds`` rounds of calls; the request after the last round says
  ``tool_choice="none"``, and a call the LLM still asks for then is dropped (logged), not run;
- a call runs at most once: calls are keyed by id within the turn, a repeated id gets the
  recorded result;
- a speculative reply (server VAD) runs no tool before its turn is committed (``gate``);
- the calls of a round run in parallel; a barge-in cancels them (MCP cancellation, a cancel event
  for client tools), and the exchange kept for the history says they were cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from opentelemetry.context import Context

from voxline.orchestrator.domain import (
    ChatMessage,
    GenerateOptions,
    LlmSummary,
    StageClients,
    ToolCall,
    ToolCallDelta,
)
from voxline.orchestrator.tools.toolbox import CallContext, Toolbox, ToolOutcome

log = logging.getLogger(__name__)

CANCELLED_RESULT = "cancelled: the user interrupted before the tool finished"


@dataclasses.dataclass(frozen=True)
class SpeakNow:
    """Speak what the LLM wrote so far now; then ``filler`` (if any) as its own sentence."""

    filler: str = ""


@dataclasses.dataclass
class ToolRecord:
    """What the turn's tool calls did; written by the loop, read by the turn at its end."""

    calls: int = 0
    #: Time spent waiting for tools (a round of parallel calls counts once), ms.
    ms: float = 0.0
    rounds: int = 0
    #: Calls asked for after the last allowed round, not run.
    dropped: int = 0
    #: The assistant messages with tool calls and the tool results, in order, for the history.
    exchange: list[ChatMessage] = dataclasses.field(default_factory=list)


class _Assembler:
    """Builds complete calls from streamed deltas (keyed by the delta's index)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def feed(self, delta: ToolCallDelta) -> None:
        entry = self._calls.setdefault(delta.index, ["", "", ""])
        entry[0] = delta.id or entry[0]
        entry[1] = delta.name or entry[1]
        entry[2] += delta.arguments_delta

    def calls(self, round_number: int) -> list[ToolCall]:
        out = []
        for index in sorted(self._calls):
            call_id, name, arguments = self._calls[index]
            out.append(ToolCall(call_id or f"call_r{round_number}_{index}", name, arguments))
        return out


def reply_stream(stages: StageClients, messages: Sequence[ChatMessage], options: GenerateOptions,
                 toolbox: Toolbox | None, *, language: str, context: CallContext,
                 record: ToolRecord, gate: Callable[[], Awaitable[object]] | None = None,
                 parent: Context | None = None
                 ) -> AsyncGenerator[str | LlmSummary | ToolCallDelta | SpeakNow, None]:
    """The reply's stream: plain ``stages.generate`` when the session has no tools."""
    specs = toolbox.specs() if toolbox is not None else []
    if toolbox is None or not specs:
        return stages.generate(messages, options)
    return _with_tools(stages, list(messages), dataclasses.replace(options, tools=tuple(specs)),
                       toolbox, language, context, record, gate, parent)


async def _with_tools(stages: StageClients, conversation: list[ChatMessage],
                      options: GenerateOptions, toolbox: Toolbox, language: str,
                      context: CallContext, record: ToolRecord,
                      gate: Callable[[], Awaitable[object]] | None, parent: Context | None
                      ) -> AsyncGenerator[str | LlmSummary | SpeakNow, None]:
    settings = toolbox.settings
    said = False
    tail = ""  # the model's last text piece, across rounds
    results: dict[str, ToolOutcome] = {}  # by call id: a call is never run twice
    for round_number in range(settings.max_tool_rounds + 1):
        last = round_number == settings.max_tool_rounds
        request = dataclasses.replace(options, tool_choice="none") if last else options
        assembler = _Assembler()
        written: list[str] = []
        # text after a tool round continues what the model wrote before it: one space between
        joint = bool(tail) and not tail[-1].isspace()
        async with contextlib.aclosing(stages.generate(conversation, request)) as stream:
            async for item in stream:
                if isinstance(item, ToolCallDelta):
                    assembler.feed(item)
                    continue
                if isinstance(item, str):
                    if joint and item.strip():
                        # "Let me check." + "It is 14 degrees": one reply text, with a space
                        item, joint = (item if item[0].isspace() else " " + item), False
                    written.append(item)
                    said = said or bool(item.strip())
                    tail = item
                yield item
        calls = assembler.calls(round_number)
        if not calls:
            return
        if last:
            record.dropped += len(calls)
            log.warning("tool calls dropped: the turn's rounds are used up",
                        extra={"turn": context.turn, "rounds": settings.max_tool_rounds,
                               "tools": [c.name for c in calls]})
            return
        yield SpeakNow()  # "Let me check." is spoken now, not after the tools
        if gate is not None:
            await gate()  # a speculative reply runs no tool before its turn is committed
        asked = ChatMessage("assistant", "".join(written).strip(), tool_calls=tuple(calls))
        record.rounds += 1
        outcomes: dict[str, ToolOutcome] = {}
        fresh = [c for c in dict((c.id, c) for c in calls).values() if c.id not in results]
        tasks = {c.id: asyncio.create_task(toolbox.run(c, context, parent),
                                           name=f"tool-{c.name}") for c in fresh}
        started = time.perf_counter()
        try:
            if tasks:
                pending: set[asyncio.Task[ToolOutcome]] = set(tasks.values())
                filler = settings.filler(language) if settings.filler_ms and not said else ""
                if filler:
                    _done, pending = await asyncio.wait(pending, timeout=settings.filler_ms / 1000.0)
                    if pending:
                        said = True
                        yield SpeakNow(filler)
                if pending:
                    await asyncio.wait(pending)
        finally:
            for task in tasks.values():
                task.cancel()  # only the unfinished: a barge-in (or the call ending) cut them
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            for call_id, task in tasks.items():
                if not task.cancelled() and task.exception() is None:
                    outcomes[call_id] = results[call_id] = task.result()
            record.calls += len(tasks)
            record.ms = round(record.ms + (time.perf_counter() - started) * 1000.0, 3)
            # what the history keeps, also when a barge-in cut the round short
            record.exchange.append(asked)
            for call in calls:
                outcome = outcomes.get(call.id) or results.get(call.id)
                content = outcome.content if outcome is not None else CANCELLED_RESULT
                record.exchange.append(ChatMessage("tool", content, tool_call_id=call.id))
        conversation += record.exchange[-(len(calls) + 1):]
