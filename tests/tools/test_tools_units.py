"""The Toolbox and the settings on their own (no sockets): results cut to the size limit, unknown
tools, filler phrases by language, and the flags that set them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from voxline.common.config import ConfigError
from voxline.orchestrator.config import parse
from voxline.orchestrator.domain import ToolCall, ToolSpec
from voxline.orchestrator.events import Event
from voxline.orchestrator.tools.settings import ToolSettings, parse_fillers
from voxline.orchestrator.tools.toolbox import CallContext, Toolbox, ToolOutcome

EVENTS: list[Event] = []
CONTEXT = CallContext(turn=1, emit=EVENTS.append)


class Echo:
    """A tool source whose one tool returns ``size`` characters."""

    kind = "mcp"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def specs(self) -> Sequence[ToolSpec]:
        return [ToolSpec("echo", "", '{"type": "object", "properties": {"size": {"type": "integer"}}}')]

    async def call(self, call: ToolCall, arguments: dict[str, Any], context: CallContext,
                   timeout_s: float) -> ToolOutcome:
        self.calls.append(arguments)
        return ToolOutcome("x" * arguments["size"])


async def test_results_are_cut_to_the_limit() -> None:
    source = Echo()
    box = Toolbox([source], ToolSettings(max_result_chars=100))
    short = await box.run(ToolCall("c1", "echo", '{"size": 100}'), CONTEXT)
    assert short.content == "x" * 100
    long = await box.run(ToolCall("c2", "echo", '{"size": 5000}'), CONTEXT)
    assert long.content == "x" * 100 + " [cut: 4900 more characters]"


@pytest.mark.parametrize(("call", "expected"), [
    (ToolCall("c1", "nope", "{}"), "there is no tool named 'nope'"),
    (ToolCall("c2", "echo", "{size: 3"), "not valid JSON"),
    (ToolCall("c3", "echo", "[1]"), "must be a JSON object"),
    (ToolCall("c4", "echo", '{"size": "big"}'),
     "invalid arguments for echo: size: 'big' is not of type 'integer'"),
])
async def test_calls_that_cannot_run_say_why(call: ToolCall, expected: str) -> None:
    source = Echo()
    outcome = await Toolbox([source], ToolSettings()).run(call, CONTEXT)
    assert outcome.is_error and expected in outcome.content
    assert source.calls == []


def test_filler_by_language() -> None:
    settings = ToolSettings(fillers=parse_fillers("en=One moment.|fr=Un instant.|de=|*=Hold on."))
    assert settings.filler("fr-FR") == "Un instant."
    assert settings.filler("en") == "One moment."
    assert settings.filler("de") == ""  # none in German
    assert settings.filler("") == "Hold on."
    with pytest.raises(ConfigError, match="LANGUAGE=PHRASE"):
        parse_fillers("One moment.")


def test_tool_flags(tmp_path: Any) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"w": {"command": "python", "args": ["w.py"]}}}')
    parsed = parse(["--mcp-config", str(config), "--max-tool-rounds", "2", "--tool-filler-ms", "0",
                    "--tool-filler", "en=Wait."]).tools
    assert (parsed.mcp_config, parsed.max_tool_rounds, parsed.filler_ms) == (str(config), 2, 0)
    assert parsed.fillers == (("en", "Wait."),)
    with pytest.raises(ConfigError, match="needs either"):
        config.write_text('{"mcpServers": {"w": {}}}')
        parse(["--mcp-config", str(config)])
    with pytest.raises(ConfigError, match="--tool-result-max-chars"):
        parse(["--tool-result-max-chars", "10"])
