"""Tools a Converse client runs itself: declared in its SessionConfig, called over the stream.

A call goes out as a ``ClientToolCallEvent``; the client answers with a tool result carrying the
same id. No answer within the timeout, or a barge-in, sends a ``ToolCallCancelledEvent`` (the
client should stop the work; a result that still comes is ignored). Any-language gRPC clients get
tools this way without hosting an MCP server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

from voxline.common.errors import InvalidInput, LimitExceeded
from voxline.orchestrator.domain import ToolCall, ToolSpec
from voxline.orchestrator.events import ClientToolCallEvent, ToolCallCancelledEvent
from voxline.orchestrator.tools.settings import ToolSettings
from voxline.orchestrator.tools.toolbox import (
    TOOL_NAME,
    CallContext,
    Toolbox,
    ToolOutcome,
    ToolSource,
    check_schema,
)

log = logging.getLogger(__name__)

MAX_CLIENT_TOOLS = 32
#: Characters of one client tool definition (name, description, schema).
MAX_TOOL_DEFINITION_CHARS = 8000
#: A client's result, characters (it is cut again to --tool-result-max-chars for the prompt).
MAX_RESULT_CHARS = 256_000
#: Ids of calls already answered, cancelled or timed out, remembered so that a late result is
#: ignored rather than refused.
_REMEMBERED_IDS = 256


def check_client_tools(specs: Sequence[ToolSpec], server_names: Sequence[str] = ()) -> None:
    """InvalidInput (LimitExceeded for sizes) naming the first problem in a client's tools."""
    if len(specs) > MAX_CLIENT_TOOLS:
        raise LimitExceeded(f"{len(specs)} client tools; the limit is {MAX_CLIENT_TOOLS}")
    names: set[str] = set()
    for index, spec in enumerate(specs):
        if not TOOL_NAME.match(spec.name):
            raise InvalidInput(f"tools[{index}].name {spec.name[:80]!r} must be 1-64 characters "
                               "of [A-Za-z0-9_-]")
        if spec.name in names:
            raise InvalidInput(f"tools[{index}].name {spec.name!r} is declared twice")
        if spec.name in server_names:
            raise InvalidInput(f"tools[{index}].name {spec.name!r} is already a server tool; "
                               "choose another name")
        size = len(spec.name) + len(spec.description) + len(spec.parameters_json)
        if size > MAX_TOOL_DEFINITION_CHARS:
            raise LimitExceeded(f"tools[{index}] is {size} characters; the limit is "
                                f"{MAX_TOOL_DEFINITION_CHARS}")
        check_schema(spec.name, spec.parameters_json)
        names.add(spec.name)


class ClientTools:
    """The client's tools for one Converse stream; results come in through ``deliver``."""

    kind = "client"

    def __init__(self, specs: Sequence[ToolSpec]) -> None:
        self._specs = list(specs)
        self._waiting: dict[str, asyncio.Future[ToolOutcome]] = {}
        self._done: collections.deque[str] = collections.deque(maxlen=_REMEMBERED_IDS)

    def specs(self) -> Sequence[ToolSpec]:
        return self._specs

    def deliver(self, call_id: str, content: str, is_error: bool) -> None:
        """The client's result for ``call_id``. InvalidInput for an id never sent to it."""
        if len(content) > MAX_RESULT_CHARS:
            raise LimitExceeded(f"tool_result.content is {len(content)} characters; the limit is "
                                f"{MAX_RESULT_CHARS}")
        future = self._waiting.pop(call_id, None)
        if future is None:
            if call_id in self._done:
                log.info("late client tool result ignored", extra={"call_id": call_id})
                return
            raise InvalidInput(f"tool_result.id {call_id[:80]!r} answers no tool call of this "
                               "conversation")
        self._done.append(call_id)
        if not future.done():
            future.set_result(ToolOutcome(content, is_error=is_error))

    async def call(self, call: ToolCall, arguments: dict[str, Any], context: CallContext,
                   timeout_s: float) -> ToolOutcome:
        if call.id in self._waiting or call.id in self._done:
            raise InvalidInput(f"tool call id {call.id!r} was already used")  # never run twice
        future: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        context.emit(ClientToolCallEvent(context.turn, call.id, call.name, call.arguments_json))
        reason = "timed out"
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except asyncio.CancelledError:
            reason = "interrupted"
            raise
        finally:
            if self._waiting.pop(call.id, None) is not None:
                self._done.append(call.id)
                context.emit(ToolCallCancelledEvent(context.turn, call.id, reason))


def session_toolbox(servers: ToolSource | None, client_specs: Sequence[ToolSpec],
                    settings: ToolSettings) -> Toolbox | None:
    """The Toolbox of one Converse stream: the operator's MCP servers (``servers``, may be None)
    and the client's own tools (checked here: InvalidInput names the first problem). None when the
    session has no tools at all."""
    server_names = [s.name for s in servers.specs()] if servers is not None else []
    check_client_tools(client_specs, server_names)
    client = ClientTools(client_specs) if client_specs else None
    sources: list[ToolSource] = [s for s in (servers, client) if s is not None]
    if not sources:
        return None
    return Toolbox(sources, settings, client=client)
