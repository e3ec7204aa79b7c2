"""The one small interface every LLM provider implements, and the error it raises.

A provider turns a :class:`ChatRequest` into an async stream of text deltas (``str``) and tool-call
deltas (:class:`ToolCallDelta`) closed by one :class:`Finish`. A provider that can call tools says
so with a class attribute ``supports_tools = True``; one without it (or False) is never given a
request that uses tools (the router skips it). Cancelling the consumer (closing the generator)
must cancel the work at the source: close the HTTP stream, stop the local generation.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from voxline.llm.chat import ChatRequest, Finish, ToolCallDelta

#: Shapes of API keys and bearer tokens, scrubbed from any text that leaves the provider even when
#: the exact key is unknown (a key echoed back by an API, a proxy's error page).
_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[^\s'\"]+"),
    re.compile(r"\bgsk_[A-Za-z0-9]{8,}"),
    re.compile(r"\bcsk-[A-Za-z0-9]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)


class ProviderError(Exception):
    """A provider could not produce (or finish) a reply; ``reason`` is safe to show."""

    #: Does this failure say something about the provider's health (circuit breaker)?
    counts_against_provider = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderBusy(ProviderError):
    """The provider is saturated by this gateway's own requests (the local model's worker queue):
    the request moves on, but the provider is healthy, so its circuit breaker is not charged."""

    counts_against_provider = False


@dataclass
class AttemptProgress:
    """What a provider tells the router about one attempt while it runs (see ``current_attempt``)."""

    #: True while the attempt waits for capacity inside this gateway (not yet sent to the model).
    waiting_for_capacity: bool = False


#: Set by the router around each attempt: a provider may mark the attempt as queued, so that a
#: first-token timeout spent waiting in the gateway's own queue is not held against the provider.
current_attempt: contextvars.ContextVar[AttemptProgress | None] = contextvars.ContextVar(
    "voxline_llm_attempt", default=None)


@runtime_checkable
class ChatProvider(Protocol):
    """A source of streamed chat completions."""

    #: Short name used in requests, logs and summaries: "groq", "cerebras", "local".
    name: str
    #: The model it serves.
    model: str

    @property
    def available(self) -> bool:
        """True when configured and ready (a key is set, the model is loaded)."""
        ...

    @property
    def unavailable_reason(self) -> str:
        """Why it is not available, and how to fix that ("" when available)."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[str | ToolCallDelta | Finish, None]:
        """Text and tool-call deltas as they arrive, then exactly one Finish. Raises ProviderError."""
        ...

    async def warm_up(self) -> None:
        """Load and warm whatever the provider needs before serving (may be a no-op)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...


def supports_tools(provider: ChatProvider) -> bool:
    """True when ``provider`` declares it can call tools."""
    return bool(getattr(provider, "supports_tools", False))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and anything shaped like a key replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("***", text)
    return text
