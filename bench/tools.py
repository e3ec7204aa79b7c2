"""Tools in a spoken turn: what the filler buys, and what the tool loop costs.

    .venv/bin/python -m bench.tools [--turns 20] [--calls 500] [--tool-s 1.5]

Everything runs in one process on in-memory fakes (``voxline.testing.stage_fakes``: STT, LLM and TTS
with no latency of their own; a tool source that sleeps) driving the real ``TurnRunner``, tool
loop and ``Toolbox`` (schema validation, span, histogram), so the figures are the orchestrator's.

1. Filler: a text turn whose LLM first calls a tool taking ``--tool-s`` seconds, then answers.
   Time to first audio (end of the user's turn to the first reply audio, TurnMetrics) with the
   filler (said after ``--tool-filler-ms``, 700 ms) against without it (--tool-filler-ms 0), side by
   side on the same fakes.
2. Overhead per tool call: a turn whose LLM calls an instant tool, ``--calls`` times. Overhead =
   the loop's wall time around the round (ToolRecord.ms) − the tool's own time (measured inside
   the tool): argument parsing and validation, the span, the histogram, the task. p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from bench.stats import percentile
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import (
    ChatMessage,
    GenerateOptions,
    LlmSummary,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from voxline.orchestrator.events import Event, MetricsEvent, SessionSettings
from voxline.orchestrator.history import History
from voxline.orchestrator.tools.settings import ToolSettings
from voxline.orchestrator.tools.toolbox import CallContext, Toolbox, ToolOutcome
from voxline.orchestrator.turn import TurnInput, TurnRunner
from voxline.testing.stage_fakes import InMemoryStages

SCHEMA = json.dumps({"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]})


class SleepyTool:
    """A server-side tool source: ``lookup`` sleeps ``seconds`` and records its own time."""

    kind = "mcp"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.own_s: list[float] = []

    def specs(self) -> Sequence[ToolSpec]:
        return [ToolSpec("lookup", "Looks something up", SCHEMA)]

    async def call(self, call: ToolCall, arguments: dict[str, Any], context: CallContext,
                   timeout_s: float) -> ToolOutcome:
        started = time.perf_counter()
        if self.seconds:
            await asyncio.sleep(self.seconds)
        self.own_s.append(time.perf_counter() - started)
        return ToolOutcome(json.dumps({"city": arguments["city"], "temp_c": 14}))


class ToolCallingStages(InMemoryStages):
    """The fake LLM calls ``lookup`` once per turn (no text before it), then answers."""

    async def generate(self, messages: Sequence[ChatMessage], options: GenerateOptions
                       ) -> AsyncGenerator[str | ToolCallDelta | LlmSummary, None]:
        if options.tools and messages[-1].role != "tool":
            yield ToolCallDelta(0, f"call_{len(self.requests)}_{len(messages)}", "lookup", "")
            yield ToolCallDelta(0, arguments_delta='{"city": "Paris"}')
            self.requests.append((list(messages), options))
            yield LlmSummary("fake", "fake", 0.0, 0.0, False, "tool_calls", 10, 5)
            return
        async for item in super().generate(messages, options):
            yield item


async def one_turn(filler_ms: int, tool_s: float, number: int) -> tuple[float, float, float]:
    """One turn: (time to first audio ms, tool round ms, the tool's own ms)."""
    tool = SleepyTool(tool_s)
    settings = ToolSettings(filler_ms=filler_ms, tool_timeout_s=30.0)
    stages = ToolCallingStages()
    stages.deltas = ["It is 14 degrees in Paris."]
    metrics: list[MetricsEvent] = []

    def emit(event: Event) -> None:
        if isinstance(event, MetricsEvent):
            metrics.append(event)

    session = SessionSettings(language="en", tools=Toolbox([tool], settings))
    runner = TurnRunner(stages, OrchestratorConfig(), session, History(4), emit)
    await runner.run(TurnInput(number, time.perf_counter(), text="Weather in Paris?"))
    (m,) = metrics
    assert m.metrics.status == "completed", m.metrics.error
    return m.metrics.time_to_first_audio_ms, m.metrics.tool_ms, sum(tool.own_s) * 1000.0


async def measure(turns: int, calls: int, tool_s: float) -> dict[str, Any]:
    with_filler, without = [], []
    for i in range(turns):  # interleaved, so drift hits both alike
        with_filler.append((await one_turn(700, tool_s, i))[0])
        without.append((await one_turn(0, tool_s, i))[0])
    overhead = []
    for i in range(calls):
        _ttfa, round_ms, own_ms = await one_turn(0, 0.0, i)
        overhead.append(round_ms - own_ms)
    return {"turns": turns, "calls": calls, "tool_s": tool_s,
            "ttfa_filler_ms": statistics.median(with_filler),
            "ttfa_no_filler_ms": statistics.median(without),
            "overhead_p50_ms": percentile(overhead, 50), "overhead_p99_ms": percentile(overhead, 99)}


def format_report(r: dict[str, Any]) -> str:
    ratio = r["ttfa_filler_ms"] / r["ttfa_no_filler_ms"] if r["ttfa_no_filler_ms"] else float("nan")
    return "\n".join([
        f"tools: a turn with a {r['tool_s']:g} s tool, median of {r['turns']} turns each "
        "(in-memory fakes; the real TurnRunner, tool loop and Toolbox)",
        f"  time to first audio, filler at 700 ms : {r['ttfa_filler_ms']:8.1f} ms",
        f"  time to first audio, no filler        : {r['ttfa_no_filler_ms']:8.1f} ms",
        f"  ratio filler / no filler              : {ratio:8.2f}x",
        f"overhead per tool call ({r['calls']} calls; round wall time - the tool's own time):",
        f"  p50 {r['overhead_p50_ms']:.3f} ms   p99 {r['overhead_p99_ms']:.3f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per filler setting")
    parser.add_argument("--calls", type=int, default=500, help="instant tool calls for the overhead")
    parser.add_argument("--tool-s", type=float, default=1.5, help="the slow tool's duration, seconds")
    ns = parser.parse_args(argv)
    logging.disable(logging.INFO)  # one log line per call would be the benchmark
    print(format_report(asyncio.run(measure(ns.turns, ns.calls, ns.tool_s))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
