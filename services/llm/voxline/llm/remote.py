"""Groq and Cerebras through their official async SDKs (OpenAI-style streaming chat completions).

Both clients are built with ``max_retries=0``: a silent SDK retry would hide a provider's latency
and failures from the router, which owns retries (fallback, hedging, circuit breaker). Timeouts are
explicit. Error reasons are reduced to a status and a short, scrubbed message: SDK exceptions carry
response bodies, and some APIs echo the rejected key back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from voxline.llm.chat import ChatRequest, Finish, Message, ToolCallDelta, Usage
from voxline.llm.provider import ProviderError, scrub

log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 160


@dataclass(frozen=True)
class RemoteSettings:
    """How to reach one OpenAI-style provider."""

    name: str
    model: str
    base_url: str
    api_key: str
    #: Env var the key comes from, named in "not configured" messages.
    key_env: str
    #: Read/write timeout of one HTTP exchange, seconds (the router's first-token timeout is
    #: usually much shorter).
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0


def _groq_client(settings: RemoteSettings, timeout: httpx.Timeout) -> Any:
    from groq import AsyncGroq

    # The SDK appends "/openai/v1/chat/completions" itself: base_url is the bare host.
    return AsyncGroq(api_key=settings.api_key, base_url=settings.base_url, max_retries=0,
                     timeout=timeout)


def _cerebras_client(settings: RemoteSettings, timeout: httpx.Timeout) -> Any:
    from cerebras.cloud.sdk import AsyncCerebras

    # warm_tcp_connection=True (the default) makes the constructor send a blocking request.
    return AsyncCerebras(api_key=settings.api_key, base_url=settings.base_url, max_retries=0,
                         timeout=timeout, warm_tcp_connection=False)


_CLIENT_FACTORIES: dict[str, Callable[[RemoteSettings, httpx.Timeout], Any]] = {
    "groq": _groq_client,
    "cerebras": _cerebras_client,
}


class RemoteProvider:
    """A hosted provider reached through its SDK; unavailable without an API key."""

    #: Both APIs take OpenAI-style ``tools`` and stream ``tool_calls`` deltas.
    supports_tools = True

    def __init__(self, settings: RemoteSettings) -> None:
        if settings.name not in _CLIENT_FACTORIES:
            raise ValueError(f"unknown remote provider {settings.name!r}")
        self.name = settings.name
        self.model = settings.model
        self._settings = settings
        self._client: Any = None
        if settings.api_key:
            timeout = httpx.Timeout(settings.timeout_s,
                                    connect=min(settings.connect_timeout_s, settings.timeout_s))
            self._client = _CLIENT_FACTORIES[settings.name](settings, timeout)

    @property
    def available(self) -> bool:
        return self._client is not None

    @property
    def unavailable_reason(self) -> str:
        return "" if self.available else f"no API key: set {self._settings.key_env}"

    async def warm_up(self) -> None:
        """Nothing to load; no request is sent at start-up (it would cost quota and time)."""

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _reason(self, exc: BaseException) -> str:
        """A short, credential-free description of an SDK or transport failure."""
        status = getattr(exc, "status_code", None)
        detail = ""
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            error = body.get("error", body)
            detail = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        elif isinstance(exc, httpx.HTTPError) or status is None:
            detail = str(exc)
        detail = scrub(detail, [self._settings.api_key])[:_MAX_REASON_CHARS]
        kind = type(exc).__name__
        if status is not None:
            text = f"HTTP {status} ({kind})"
        elif "Timeout" in kind:
            text = f"timed out ({kind})"
        else:
            text = kind
        return f"{text}: {detail}" if detail else text

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        sampling = request.sampling
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in request.messages],
            "stream": True,
        }
        if request.tools:
            params["tools"] = [_wire_tool(t.name, t.description, t.parameters_json)
                               for t in request.tools]
            if request.tool_choice in ("auto", "none", "required"):
                params["tool_choice"] = request.tool_choice
            elif request.tool_choice:
                params["tool_choice"] = {"type": "function",
                                         "function": {"name": request.tool_choice}}
        if sampling.temperature is not None:
            params["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            params["top_p"] = sampling.top_p
        if sampling.max_tokens:
            params["max_completion_tokens"] = sampling.max_tokens
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        return params

    async def stream(self, request: ChatRequest
                     ) -> AsyncGenerator[str | ToolCallDelta | Finish, None]:
        """Stream the reply; closing this generator closes the HTTP response (and connection)."""
        if self._client is None:
            raise ProviderError(self.unavailable_reason)
        try:
            response = await self._client.chat.completions.create(**self._params(request))
        except Exception as exc:  # the SDK's status/connection/timeout errors
            raise ProviderError(self._reason(exc)) from None
        finish_reason = ""
        usage = Usage()
        model = ""
        try:
            async for chunk in response:
                model = getattr(chunk, "model", "") or model
                for choice in getattr(chunk, "choices", None) or []:
                    delta = _field(choice, "delta")
                    text = _field(delta, "content")
                    if text:
                        yield str(text)
                    for call in _field(delta, "tool_calls") or []:
                        yield _tool_call_delta(call)
                    if _field(choice, "finish_reason"):
                        finish_reason = str(_field(choice, "finish_reason"))
                usage = _usage_of(chunk) or usage
        except Exception as exc:
            raise ProviderError(self._reason(exc)) from None
        finally:
            # On cancellation or error this closes the HTTP stream, so the provider stops work.
            await response.close()
        # The HTTP body ended cleanly (a dropped connection raises above): the reply is whole even
        # when the provider left out finish_reason, as some OpenAI-style servers do.
        yield Finish(finish_reason=finish_reason or "stop", usage=usage, model=model)


def _wire_message(message: Message) -> dict[str, Any]:
    """A message in the OpenAI chat-completions shape both SDKs send."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments_json or "{}"}}
                             for c in message.tool_calls]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def _wire_tool(name: str, description: str, parameters_json: str) -> dict[str, Any]:
    parameters = json.loads(parameters_json) if parameters_json else {"type": "object",
                                                                     "properties": {}}
    return {"type": "function",
            "function": {"name": name, "description": description, "parameters": parameters}}


def _field(obj: Any, name: str) -> Any:
    """``obj.name``, or ``obj[name]`` where the SDK left a part of a chunk as a plain dict (the
    Cerebras SDK does for a chunk its union of response types does not recognise)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _tool_call_delta(call: Any) -> ToolCallDelta:
    """The SDK's tool-call delta (index, id, function.name, function.arguments)."""
    function = _field(call, "function")
    return ToolCallDelta(index=int(_field(call, "index") or 0),
                         id=str(_field(call, "id") or ""),
                         name=str(_field(function, "name") or ""),
                         arguments_delta=str(_field(function, "arguments") or ""))


def _usage_of(chunk: Any) -> Usage | None:
    """Usage from the OpenAI-style ``usage`` field (Cerebras) or ``x_groq.usage`` (Groq)."""
    usage = getattr(chunk, "usage", None)
    if usage is None:
        usage = getattr(getattr(chunk, "x_groq", None), "usage", None)
    if usage is None:
        return None
    return Usage(prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                 completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
