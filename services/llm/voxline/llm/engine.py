"""The LLM gateway's engine: validation, reply cache, then the provider chain (no grpc here)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace

from voxline.common.admission import AdmissionGate
from voxline.common.errors import InvalidInput, LimitExceeded, NotConfigured, NotReady, clip
from voxline.llm.breaker import CircuitBreaker, TtftStats
from voxline.llm.cache import ReplyCache, load_phrasebook
from voxline.llm.chat import (
    ROLES,
    TOOL_CHOICE_MODES,
    ChatRequest,
    Finish,
    Summary,
    ToolCallDelta,
    Usage,
)
from voxline.llm.config import KEY_ENV, PROVIDER_NAMES, LlmConfig
from voxline.llm.provider import ChatProvider, supports_tools
from voxline.llm.router import HedgePolicy, ProviderState, Router, RouteResult

log = logging.getLogger(__name__)

_MAX_STOP_SEQUENCES = 4
#: Longest stop sequence: the local model's stop-string matcher precomputes tables that grow with
#: it (5,000 characters once cost 940 MB), and no provider needs more.
_MAX_STOP_CHARS = 32
#: Most messages and provider names in one request.
_MAX_MESSAGES = 512
_MAX_PROVIDER_NAMES = 8
_MAX_TOKENS_LIMIT = 8192
#: OpenAI's (and so Groq's and Cerebras's) rule for function names.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_TOOLS = 128
_HOW_TO_CONFIGURE = ("set GROQ_API_KEY or CEREBRAS_API_KEY in the gateway's environment, or enable "
                     "the offline model with --local-model smollm2 (and keep 'local' in --providers)")


#: The operator's how-to is logged at most this often (each refused request would repeat it).
_TELL_EVERY_S = 60.0


@dataclass(frozen=True)
class ProviderInfo:
    """One provider's state, for ListProviders."""

    name: str
    model: str
    available: bool
    circuit: str
    reason: str
    supports_tools: bool = False


class DisabledProvider:
    """Stands in for a provider switched off by configuration (never available)."""

    def __init__(self, name: str, model: str, reason: str) -> None:
        self.name, self.model, self._reason = name, model, reason

    @property
    def available(self) -> bool:
        return False

    @property
    def unavailable_reason(self) -> str:
        return self._reason

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        from voxline.llm.provider import ProviderError

        raise ProviderError(self._reason)
        yield ""  # pragma: no cover - makes this an async generator

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def build_providers(config: LlmConfig) -> list[ChatProvider]:
    """Groq, Cerebras and the local model as configured (unconfigured ones are unavailable)."""
    from voxline.llm.remote import RemoteProvider, RemoteSettings

    providers: list[ChatProvider] = []
    for name in PROVIDER_NAMES:
        if name == "local":
            if not config.local_enabled:
                providers.append(DisabledProvider("local", "", "disabled (--local-model none)"))
            elif "local" not in config.providers:
                # not loaded at all: it would cost seconds of start-up for a provider never used
                providers.append(DisabledProvider("local", "", "not in --providers"))
            else:
                from voxline.llm.local import LocalProvider

                providers.append(LocalProvider(config.local_model, config.local_device,
                                               config.local_max_generated, config.local_cache_dir,
                                               config.local_threads, config.local_max_prompt_tokens,
                                               config.local_max_waiting))
            continue
        providers.append(RemoteProvider(RemoteSettings(
            name=name,
            model=getattr(config, f"{name}_model"),
            base_url=getattr(config, f"{name}_base_url"),
            api_key=getattr(config, f"{name}_api_key"),
            key_env=KEY_ENV[name],
            timeout_s=config.request_timeout_s,
            connect_timeout_s=config.connect_timeout_s,
        )))
    return providers


def build_cache(config: LlmConfig) -> ReplyCache:
    phrasebook = load_phrasebook(config.cache_file) if config.cache_file else None
    return ReplyCache(max_words=config.cache_max_words, max_entries=config.cache_size,
                      ttl_s=config.cache_ttl_s, phrasebook=phrasebook)


def validate(request: ChatRequest, max_input_chars: int) -> None:
    """Raise InvalidInput (LimitExceeded for sizes) naming the first problem in ``request``.

    Every piece of client text counts toward ``max_input_chars``: message contents, stop
    sequences and provider names (roles are checked against a short list)."""
    if not request.messages:
        raise InvalidInput("messages is empty: send at least one message, the last from 'user'")
    if len(request.messages) > _MAX_MESSAGES:
        raise LimitExceeded(f"{len(request.messages)} messages; the limit is {_MAX_MESSAGES}")
    sampling = request.sampling
    if len(sampling.stop) > _MAX_STOP_SEQUENCES:
        raise InvalidInput(f"sampling.stop has {len(sampling.stop)} sequences; at most "
                           f"{_MAX_STOP_SEQUENCES} non-empty sequences of at most "
                           f"{_MAX_STOP_CHARS} characters")
    for index, stop in enumerate(sampling.stop):
        if not stop or len(stop) > _MAX_STOP_CHARS:
            raise InvalidInput(f"sampling.stop[{index}] is {len(stop)} characters; stop sequences "
                               f"must be 1..{_MAX_STOP_CHARS} characters")
    if len(request.providers) > _MAX_PROVIDER_NAMES:
        raise InvalidInput(f"{len(request.providers)} provider names; at most {_MAX_PROVIDER_NAMES}")
    total = sum(len(s) for s in sampling.stop) + sum(len(p) for p in request.providers)
    total += _validate_tools(request)
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidInput(f"messages[{index}].role is {clip(message.role)}; "
                               f"expected one of {list(ROLES)}")
        if message.tool_calls and message.role != "assistant":
            raise InvalidInput(f"messages[{index}] has tool_calls but role {clip(message.role)}; "
                               "only an assistant message calls tools")
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidInput(f"messages[{index}] is a tool result without tool_call_id")
        for call in message.tool_calls:
            if not call.id or not _TOOL_NAME.match(call.name):
                raise InvalidInput(f"messages[{index}].tool_calls: each call needs an id and a "
                                   "name of 1-64 characters [A-Za-z0-9_-]")
            total += len(call.arguments_json) + len(call.name) + len(call.id)
        if not message.content.strip() and not message.tool_calls and message.role != "tool":
            raise InvalidInput(f"messages[{index}].content is empty")
        total += len(message.content)
    if request.messages[-1].role not in ("user", "tool"):
        raise InvalidInput("the last message must be from 'user' (or a 'tool' result), not "
                           f"{clip(request.messages[-1].role)}")
    if total > max_input_chars:
        raise InvalidInput(f"conversation is {total} characters; the limit is {max_input_chars}")
    if sampling.temperature is not None and not 0.0 <= sampling.temperature <= 2.0:
        raise InvalidInput(f"sampling.temperature must be in [0, 2], got {sampling.temperature}")
    if sampling.top_p is not None and not 0.0 <= sampling.top_p <= 1.0:
        raise InvalidInput(f"sampling.top_p must be in [0, 1], got {sampling.top_p}")
    if not 0 <= sampling.max_tokens <= _MAX_TOKENS_LIMIT:
        raise InvalidInput(f"sampling.max_tokens must be in [0, {_MAX_TOKENS_LIMIT}]")
    unknown = [name for name in request.providers if name not in PROVIDER_NAMES]
    if unknown:
        raise InvalidInput(f"unknown provider(s) {clip(unknown)}; ListProviders names this gateway's")


def _validate_tools(request: ChatRequest) -> int:
    """Check the tool definitions and tool choice; the characters they add to the request."""
    if len(request.tools) > _MAX_TOOLS:
        raise LimitExceeded(f"{len(request.tools)} tools; the limit is {_MAX_TOOLS}")
    total = len(request.tool_choice)
    names: set[str] = set()
    for index, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            raise InvalidInput(f"tools[{index}].name is {clip(tool.name)}; expected 1-64 "
                               "characters of [A-Za-z0-9_-]")
        if tool.name in names:
            raise InvalidInput(f"tools[{index}].name {tool.name!r} is given twice")
        names.add(tool.name)
        if tool.parameters_json:
            try:
                schema = json.loads(tool.parameters_json)
            except ValueError as exc:
                raise InvalidInput(f"tools[{index}].parameters_json is not JSON ({exc})") from None
            if not isinstance(schema, dict):
                raise InvalidInput(f"tools[{index}].parameters_json must be a JSON object "
                                   "(a JSON Schema)")
        total += len(tool.name) + len(tool.description) + len(tool.parameters_json)
    choice = request.tool_choice
    if choice and choice not in TOOL_CHOICE_MODES and choice not in names:
        raise InvalidInput(f"tool_choice is {clip(choice)}; expected one of "
                           f"{list(TOOL_CHOICE_MODES)} or the name of a tool of the request")
    return total


class LanguageModelEngine:
    """Answers chat requests from the reply cache or the provider chain."""

    def __init__(self, providers: Sequence[ChatProvider], config: LlmConfig,
                 cache: ReplyCache | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._told_at: float | None = None  # when the operator was last told how to configure it
        self.providers = {p.name: p for p in providers}
        self.cache = cache if cache is not None else ReplyCache(max_words=0)
        states = {name: ProviderState(breaker=CircuitBreaker(config.breaker_failures,
                                                            config.breaker_cooldown_s, clock),
                                      ttft=TtftStats(),
                                      first_token_timeout_s=config.first_token_timeout_s(name),
                                      stall_timeout_s=config.stall_timeout_s(name))
                  for name in self.providers}
        fixed = None if config.hedge_delay in ("auto", "off") else float(config.hedge_delay)
        hedge = HedgePolicy(enabled=config.hedge_delay != "off", fixed_ms=fixed,
                            percentile=config.hedge_percentile, floor_ms=config.hedge_floor_ms,
                            ceiling_ms=config.hedge_ceiling_ms)
        self.router = Router(providers, states, hedge)
        self.default_chain = tuple(n for n in config.providers if n in self.providers)
        self._gate = AdmissionGate(config.max_concurrent, config.max_queued, "generations")

    @classmethod
    def from_config(cls, config: LlmConfig) -> LanguageModelEngine:
        """Build providers and cache from configuration (no model is loaded yet)."""
        return cls(build_providers(config), config, build_cache(config))

    def log_availability(self) -> None:
        """Say which providers can be used (never their keys)."""
        # A provider without its key is how the offline defaults run: said at INFO while another
        # provider of the chain can answer; a WARNING only when none can.
        usable = any(self.providers[name].available for name in self.default_chain)
        for name in self.default_chain:
            provider = self.providers[name]
            if provider.available:
                log.info("provider available", extra={"provider": name, "model": provider.model})
            else:
                log.log(logging.INFO if usable else logging.WARNING, "provider unavailable",
                        extra={"provider": name, "reason": provider.unavailable_reason})

    async def warm_up(self) -> None:
        """Load what the chain's providers need (the local model: seconds)."""
        for name in self.default_chain:
            await self.providers[name].warm_up()
        self.log_availability()

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    def provider_infos(self) -> list[ProviderInfo]:
        """The default chain first, then the other known providers."""
        order = [*self.default_chain, *(n for n in self.providers if n not in self.default_chain)]
        return [ProviderInfo(name=n, model=self.providers[n].model,
                             available=self.providers[n].available,
                             circuit=self.router.states[n].breaker.state,
                             reason=self.providers[n].unavailable_reason,
                             supports_tools=supports_tools(self.providers[n])) for n in order]

    def _tell_operator(self, message: str) -> None:
        now = time.monotonic()
        if self._told_at is None or now - self._told_at >= _TELL_EVERY_S:
            self._told_at = now
            log.warning(message)

    def _chain(self, request: ChatRequest) -> list[ChatProvider]:
        names = list(dict.fromkeys(request.providers)) or list(self.default_chain)
        chain = [self.providers[n] for n in names]
        if not any(p.available for p in chain):
            reasons = "; ".join(f"{p.name}: {p.unavailable_reason}" for p in chain)
            local = self.providers.get("local")
            if local is not None and local in chain and not isinstance(local, DisabledProvider):
                raise NotReady(f"no LLM provider is ready yet ({reasons})")
            # the how-to (variable names, flags) is for the operator, in the log; the client, who may
            # be an end user behind the orchestrator, learns that the gateway is not configured
            self._tell_operator(f"no LLM provider is available ({reasons}); {_HOW_TO_CONFIGURE}")
            raise NotConfigured("no LLM provider is available: this gateway has none configured "
                                "(its log says how to configure one)")
        if request.uses_tools and not any(supports_tools(p) for p in chain):
            listed = ", ".join(p.name for p in chain)
            raise NotConfigured(f"this request uses tools, and no provider of its chain ({listed}) "
                                "supports them: the local model does not; use groq or cerebras")
        return chain

    async def generate(self, request: ChatRequest
                       ) -> AsyncGenerator[str | ToolCallDelta | Summary, None]:
        """Text and tool-call deltas, then one Summary. Raises InvalidInput, NotConfigured,
        DependencyUnavailable. A request that uses tools never reads or fills the reply cache: a
        tool's answer changes with the world (and a cached text cannot call a tool)."""
        started = time.perf_counter()
        validate(request, self.config.max_input_chars)
        chain = self._chain(request)
        # the reply depends on where generation stops too: a reply cut at a stop string or a token
        # cap is no answer to the same words asked without them (and the other way round)
        sampling = request.sampling
        chain_key = (",".join(f"{p.name}:{p.model}" for p in chain)
                     + f"|stop={list(sampling.stop)!r}|max_tokens={sampling.max_tokens}")
        system = request.system_prompt
        cacheable = not request.no_cache and not request.uses_tools
        if cacheable:
            hit = self.cache.get(request.last_user_text, system, chain_key)
            if hit is not None:
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                summary = Summary(provider="cache", model=hit.model, time_to_first_token_ms=elapsed_ms,
                                  total_ms=elapsed_ms, cache_hit=True, finish_reason="stop",
                                  usage=Usage(), hedged=False, attempts=())
                _annotate_span(summary)
                yield hit.text
                yield summary
                return
        closing: Summary | None = None
        async with self._gate.admit():
            parts: list[str] = []
            called_tools = False
            async for item in self.router.route(request, chain, started):
                if isinstance(item, str):
                    parts.append(item)
                    yield item
                    continue
                if isinstance(item, ToolCallDelta):
                    called_tools = True
                    yield item
                    continue
                closing = _summary(item, started)
                if cacheable and not called_tools and item.finish.finish_reason == "stop":
                    self.cache.put(request.last_user_text, system, chain_key, "".join(parts),
                                   closing.model)
        # yielded after the slot is released: a consumer that stops at the summary without
        # closing this generator must not keep a slot busy
        if closing is not None:
            _annotate_span(closing)
            yield closing


def _summary(result: RouteResult, started: float) -> Summary:
    return Summary(provider=result.provider, model=result.model,
                   time_to_first_token_ms=result.time_to_first_token_ms,
                   total_ms=(time.perf_counter() - started) * 1000.0, cache_hit=False,
                   finish_reason=result.finish.finish_reason, usage=result.finish.usage,
                   hedged=result.hedged, attempts=result.attempts)


def _annotate_span(summary: Summary) -> None:
    """Put the reply's figures on the current (server) span; reasons are already credential-free."""
    span = trace.get_current_span()
    span.set_attributes({
        "llm.provider": summary.provider, "llm.model": summary.model,
        "llm.time_to_first_token_ms": summary.time_to_first_token_ms,
        "llm.total_ms": summary.total_ms, "llm.cache_hit": summary.cache_hit,
        "llm.hedged": summary.hedged, "llm.finish_reason": summary.finish_reason,
        "llm.attempts": [f"{a.provider}:{a.outcome}" for a in summary.attempts],
    })
