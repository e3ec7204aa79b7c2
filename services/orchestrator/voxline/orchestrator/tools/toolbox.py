"""One session's tools: the operator's MCP tools and the client's own, run with the rules that make
a call safe to hand to a model.

- Arguments are parsed and validated against the tool's JSON Schema (``jsonschema``) before the
  call; a call that fails validation is not run, and its result says why (the LLM can correct it).
- Each call has a timeout; a tool that fails, times out or does not exist becomes a result that
  says so (``is_error``), never a failed turn.
- Results are cut to ``max_result_chars`` before they enter the prompt.
- Each call is an ``execute_tool`` span (GenAI conventions and OpenInference's TOOL kind) and one
  sample of the per-tool duration histogram.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jsonschema  # type: ignore[import-untyped]  # no stubs in the pinned set
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from voxline.common.errors import InvalidInput
from voxline.common.metrics import record_tool_call
from voxline.orchestrator.domain import ToolCall, ToolSpec
from voxline.orchestrator.events import Event
from voxline.orchestrator.tools.settings import ToolSettings

log = logging.getLogger(__name__)

#: OpenAI's rule for function names (Groq and Cerebras follow it).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A tool without a schema takes an object of anything.
_ANY_OBJECT = {"type": "object"}
TRACER_NAME = "voxline.orchestrator"


@dataclasses.dataclass(frozen=True)
class ToolOutcome:
    """What a call gave back, as text for the model; ``is_error``: it failed and says why."""

    content: str
    is_error: bool = False


class ToolFailure(Exception):
    """A tool source could not run a call; the message is safe to show the model."""


@dataclasses.dataclass(frozen=True)
class CallContext:
    """Where a call happens: the turn (client tools send their events through ``emit``)."""

    turn: int
    emit: Callable[[Event], None]


class ClientToolsLike(Protocol):
    """Where a Converse client's tool results are delivered (``client_tools.ClientTools``)."""

    def deliver(self, call_id: str, content: str, is_error: bool) -> None: ...


class ToolSource(Protocol):
    """Where tools come from: the operator's MCP servers, or the session's client."""

    #: "mcp" or "client" (span and metric attribute).
    kind: str

    def specs(self) -> Sequence[ToolSpec]:
        """The tools available now."""
        ...

    async def call(self, call: ToolCall, arguments: dict[str, Any], context: CallContext,
                   timeout_s: float) -> ToolOutcome:
        """Run one call (raise ToolFailure or TimeoutError; cancellation must reach the tool)."""
        ...


def check_schema(name: str, parameters_json: str) -> dict[str, Any]:
    """The parsed schema of tool ``name``; InvalidInput when it is not a JSON Schema object."""
    if not parameters_json:
        return dict(_ANY_OBJECT)
    try:
        schema = json.loads(parameters_json)
    except ValueError as exc:
        raise InvalidInput(f"tool {name!r}: parameters_json is not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InvalidInput(f"tool {name!r}: parameters_json must be a JSON object (a JSON Schema)")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"tool {name!r}: parameters_json is not a valid JSON Schema "
                           f"({exc.message})") from None
    return schema


class Toolbox:
    """The tools one session may call, and how a call is run."""

    def __init__(self, sources: Sequence[ToolSource], settings: ToolSettings,
                 client: ClientToolsLike | None = None) -> None:
        self._sources = list(sources)
        self.settings = settings
        #: The session's ClientTools, where the client's tool results are delivered (or None).
        self.client = client
        self._validators: dict[tuple[str, str], Any] = {}
        self._tracer = trace.get_tracer(TRACER_NAME)

    def specs(self) -> list[ToolSpec]:
        """Every tool available now; a name offered twice keeps its first source (the server's)."""
        seen: dict[str, ToolSpec] = {}
        for source in self._sources:
            for spec in source.specs():
                seen.setdefault(spec.name, spec)
        return list(seen.values())

    def _find(self, name: str) -> tuple[ToolSource, ToolSpec] | None:
        for source in self._sources:
            for spec in source.specs():
                if spec.name == name:
                    return source, spec
        return None

    def _validator(self, spec: ToolSpec) -> Any:
        key = (spec.name, spec.parameters_json)
        validator = self._validators.get(key)
        if validator is None:
            schema = json.loads(spec.parameters_json) if spec.parameters_json else _ANY_OBJECT
            validator = jsonschema.validators.validator_for(schema)(schema)
            self._validators[key] = validator
        return validator

    def _arguments(self, call: ToolCall, spec: ToolSpec) -> dict[str, Any] | ToolOutcome:
        """The parsed, valid arguments, or the error result that explains why not."""
        try:
            arguments = json.loads(call.arguments_json) if call.arguments_json.strip() else {}
        except ValueError as exc:
            return ToolOutcome(f"error: the arguments are not valid JSON ({exc}); the call was "
                               "not made", is_error=True)
        if not isinstance(arguments, dict):
            return ToolOutcome("error: the arguments must be a JSON object; the call was not made",
                               is_error=True)
        errors = sorted(self._validator(spec).iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(arguments)"
            return ToolOutcome(f"error: invalid arguments for {spec.name}: {where}: "
                               f"{errors[0].message}; the call was not made", is_error=True)
        return arguments

    def _cut(self, content: str) -> str:
        limit = self.settings.max_result_chars
        if len(content) <= limit:
            return content
        return content[:limit] + f" [cut: {len(content) - limit} more characters]"

    async def run(self, call: ToolCall, context: CallContext, parent: Context | None = None
                  ) -> ToolOutcome:
        """Run one call to an outcome (never raises, except for cancellation)."""
        found = self._find(call.name)
        kind = found[0].kind if found is not None else "unknown"
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
                      "gen_ai.tool.call.id": call.id, "gen_ai.tool.type": "function",
                      "openinference.span.kind": "TOOL", "tool.name": call.name,
                      "voxline.tool.source": kind}
        started = time.perf_counter()
        status = "error"
        with self._tracer.start_as_current_span(f"execute_tool {call.name}", context=parent,
                                                attributes=attributes) as span:
            try:
                outcome = await self._run(call, context, found)
                status = "error" if outcome.is_error else "ok"
            except asyncio.CancelledError:
                status = "cancelled"
                span.set_attribute("voxline.tool.outcome", status)
                raise
            finally:
                seconds = time.perf_counter() - started
                record_tool_call(call.name, status, seconds)
            span.set_attribute("voxline.tool.outcome", status)
            if outcome.is_error:
                span.set_status(Status(StatusCode.ERROR, outcome.content[:200]))
                span.set_attribute("error.type", "tool_error")
        outcome = dataclasses.replace(outcome, content=self._cut(outcome.content))
        log.info("tool call", extra={"tool": call.name, "call_id": call.id, "source": kind,
                                     "outcome": status, "ms": round(seconds * 1000.0, 1)})
        return outcome

    async def _run(self, call: ToolCall, context: CallContext,
                   found: tuple[ToolSource, ToolSpec] | None) -> ToolOutcome:
        if found is None:
            return ToolOutcome(f"error: there is no tool named {call.name!r} (it may be "
                               "unavailable right now)", is_error=True)
        source, spec = found
        arguments = self._arguments(call, spec)
        if isinstance(arguments, ToolOutcome):
            return arguments
        timeout_s = (self.settings.client_tool_timeout_s if source.kind == "client"
                     else self.settings.tool_timeout_s)
        try:
            outcome = await source.call(call, arguments, context, timeout_s)
            if outcome.is_error and not outcome.content.lower().startswith("error"):
                # the model must not mistake a failure for data
                outcome = ToolOutcome(f"error: {outcome.content}", is_error=True)
            return outcome
        except TimeoutError:
            return ToolOutcome(f"error: {call.name} did not answer within {timeout_s:g} s; the "
                               "call was cancelled", is_error=True)
        except ToolFailure as exc:
            return ToolOutcome(f"error: {call.name} failed: {exc}", is_error=True)
        except Exception as exc:  # a tool source bug: the model is told, the turn goes on
            log.warning("tool call raised", exc_info=exc, extra={"tool": call.name})
            return ToolOutcome(f"error: {call.name} failed ({type(exc).__name__})", is_error=True)
