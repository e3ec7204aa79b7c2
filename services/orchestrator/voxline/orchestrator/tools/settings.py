"""The tool loop's settings: flags and ``VOXLINE_ORCHESTRATOR_*`` variables (no grpc here)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from voxline.common.config import ConfigError, option

_ENV = "VOXLINE_ORCHESTRATOR_"

#: Said when a tool is slow and nothing has been said yet, by language ("*": any other).
DEFAULT_FILLERS: tuple[tuple[str, str], ...] = (
    ("en", "One moment."), ("fr", "Un instant."), ("de", "Einen Moment."),
    ("es", "Un momento."), ("*", "One moment."),
)


@dataclasses.dataclass(frozen=True)
class ToolSettings:
    """How tools run in a turn."""

    #: The operator's MCP servers: a JSON file in the standard ``mcpServers`` shape ("": none).
    mcp_config: str = ""
    #: Rounds of tool calls in one turn; the round after the last is asked to answer in words.
    max_tool_rounds: int = 4
    #: One server-side (MCP) call, seconds.
    tool_timeout_s: float = 10.0
    #: One client-side call (the client's tool_result), seconds.
    client_tool_timeout_s: float = 15.0
    #: A tool result is cut to this many characters before it enters the prompt.
    max_result_chars: int = 4000
    #: A tool still running after this long, with nothing said yet in the turn: speak a filler.
    filler_ms: int = 700
    #: (language, phrase) pairs; "*" is the fallback; an empty phrase: no filler in that language.
    fillers: tuple[tuple[str, str], ...] = DEFAULT_FILLERS

    def filler(self, language: str) -> str:
        """The filler phrase for ``language`` ("en", "fr-FR", ""), or "" for none."""
        table = dict(self.fillers)
        base = language.split("-")[0].lower()
        return table.get(base, table.get("*", ""))


def parse_fillers(text: str) -> tuple[tuple[str, str], ...]:
    """``"en=One moment.|fr=Un instant."`` → pairs; ConfigError for an entry without '='."""
    pairs: list[tuple[str, str]] = []
    for entry in (e.strip() for e in text.split("|")):
        if not entry:
            continue
        language, sep, phrase = entry.partition("=")
        if not sep or not language.strip():
            raise ConfigError(f"--tool-filler entry {entry!r} is not LANGUAGE=PHRASE")
        pairs.append((language.strip().lower(), phrase.strip()))
    return tuple(pairs)


def add_tool_options(parser: argparse.ArgumentParser) -> None:
    """The tool flags, in their own --help group."""
    d = ToolSettings()
    group = parser.add_argument_group("tools (MCP servers and client-side tools)")
    option(group, "--mcp-config", env=_ENV + "MCP_CONFIG", default=d.mcp_config,
           help="JSON file of MCP servers in the standard {\"mcpServers\": {name: {command, args, "
                "env} | {url}}} shape; operator-only (a client can never add a server); empty: none")
    option(group, "--max-tool-rounds", env=_ENV + "MAX_TOOL_ROUNDS", default=d.max_tool_rounds,
           type=int, help="rounds of tool calls per turn; then the LLM must answer in words")
    option(group, "--tool-timeout-s", env=_ENV + "TOOL_TIMEOUT_S", default=d.tool_timeout_s,
           type=float, help="one MCP tool call; past it the call is cancelled and the LLM told so")
    option(group, "--client-tool-timeout-s", env=_ENV + "CLIENT_TOOL_TIMEOUT_S",
           default=d.client_tool_timeout_s, type=float,
           help="how long a client-side tool call waits for the client's tool_result")
    option(group, "--tool-result-max-chars", env=_ENV + "TOOL_RESULT_MAX_CHARS",
           default=d.max_result_chars, type=int,
           help="a tool result is cut to this many characters before it enters the prompt")
    option(group, "--tool-filler-ms", env=_ENV + "TOOL_FILLER_MS", default=d.filler_ms, type=int,
           help="speak a filler phrase when a tool runs this long and nothing was said yet; "
                "0: never")
    option(group, "--tool-filler", env=_ENV + "TOOL_FILLER",
           default="|".join(f"{k}={v}" for k, v in d.fillers),
           help="filler phrases by language, LANG=PHRASE separated by '|' ('*': any other "
                "language; an empty phrase: none)")


def tool_settings_from_args(ns: Any) -> ToolSettings:
    """ToolSettings from parsed flags; ConfigError for an unusable value."""
    if ns.max_tool_rounds < 0 or ns.tool_timeout_s <= 0 or ns.client_tool_timeout_s <= 0:
        raise ConfigError("--max-tool-rounds must be >= 0, --tool-timeout-s and "
                          "--client-tool-timeout-s > 0")
    if ns.tool_result_max_chars < 64 or ns.tool_filler_ms < 0:
        raise ConfigError("--tool-result-max-chars must be >= 64 and --tool-filler-ms >= 0")
    if ns.mcp_config:
        from voxline.orchestrator.tools.mcp_servers import load_mcp_config

        load_mcp_config(ns.mcp_config)  # a bad file stops the start, with the reason
    return ToolSettings(mcp_config=ns.mcp_config, max_tool_rounds=ns.max_tool_rounds,
                        tool_timeout_s=ns.tool_timeout_s,
                        client_tool_timeout_s=ns.client_tool_timeout_s,
                        max_result_chars=ns.tool_result_max_chars, filler_ms=ns.tool_filler_ms,
                        fillers=parse_fillers(ns.tool_filler))
