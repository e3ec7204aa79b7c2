"""What flows through the gateway: chat requests in, text deltas and one summary out (no protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")
#: What ``tool_choice`` may be besides the name of one tool.
TOOL_CHOICE_MODES = ("auto", "none", "required")


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call of an assistant message."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Message:
    """One chat message; an assistant message may carry tool calls, a "tool" message answers one."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its JSON Schema parameters as text ("" : no arguments)."""

    name: str
    description: str = ""
    parameters_json: str = ""


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: ``id`` and ``name`` on a call's first delta only."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True)
class Sampling:
    """Sampling options; None means the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request."""

    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    #: Provider names in the order to try; empty: the server's chain.
    providers: tuple[str, ...] = ()
    no_cache: bool = False
    tools: tuple[ToolSpec, ...] = ()
    #: "auto", "none", "required" or a tool name; "" : the provider's default ("auto").
    tool_choice: str = ""

    @property
    def uses_tools(self) -> bool:
        """True when the request offers tools or carries an earlier tool exchange."""
        return bool(self.tools) or any(m.role == "tool" or m.tool_calls for m in self.messages)

    @property
    def system_prompt(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def last_user_text(self) -> str:
        return self.messages[-1].content


@dataclass(frozen=True)
class Usage:
    """Token counts reported by a provider (0 when unknown)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Finish:
    """The last item a provider stream yields: why it stopped, and what it used."""

    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    #: Model name the provider reported, if any.
    model: str = ""


@dataclass(frozen=True)
class AttemptRecord:
    """What happened to one provider during one request."""

    provider: str
    #: "won", "failed", "cancelled", "skipped" or "busy" (queued in this gateway, not charged).
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class Summary:
    """Closes every successful reply stream."""

    provider: str
    model: str
    time_to_first_token_ms: float
    total_ms: float
    cache_hit: bool
    finish_reason: str
    usage: Usage
    hedged: bool
    attempts: tuple[AttemptRecord, ...]
