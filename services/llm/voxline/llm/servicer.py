"""gRPC edge of the LLM gateway: protobuf in, engine call, protobuf out. No routing here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from voxline.common.grpc_errors import translate_errors
from voxline.llm.chat import ChatRequest, Message, Sampling, Summary, ToolCall, ToolCallDelta, ToolSpec
from voxline.llm.engine import LanguageModelEngine
from voxline.v1 import llm_pb2, llm_pb2_grpc

SERVICE_NAME = "voxline.v1.LanguageModel"


def chat_request(request: llm_pb2.GenerateRequest) -> ChatRequest:
    """The engine's view of a GenerateRequest (validated by the engine)."""
    s = request.sampling
    sampling = Sampling(
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        max_tokens=s.max_tokens,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else None,
    )
    return ChatRequest(
        messages=tuple(Message(role=m.role.strip().lower(), content=m.content,
                               tool_calls=tuple(ToolCall(c.id, c.name, c.arguments_json)
                                                for c in m.tool_calls),
                               tool_call_id=m.tool_call_id)
                       for m in request.messages),
        sampling=sampling,
        providers=tuple(p.strip().lower() for p in request.providers if p.strip()),
        no_cache=request.no_cache,
        tools=tuple(ToolSpec(t.name, t.description, t.parameters_json) for t in request.tools),
        tool_choice=request.tool_choice.strip(),
    )


def summary_message(summary: Summary) -> llm_pb2.GenerateResponse:
    """Encode the closing Summary."""
    return llm_pb2.GenerateResponse(summary=llm_pb2.GenerateSummary(
        provider=summary.provider,
        model=summary.model,
        time_to_first_token_ms=summary.time_to_first_token_ms,
        total_ms=summary.total_ms,
        cache_hit=summary.cache_hit,
        finish_reason=summary.finish_reason,
        usage=llm_pb2.TokenUsage(prompt_tokens=summary.usage.prompt_tokens,
                                 completion_tokens=summary.usage.completion_tokens),
        hedged=summary.hedged,
        attempts=[llm_pb2.ProviderAttempt(provider=a.provider, outcome=a.outcome, reason=a.reason)
                  for a in summary.attempts],
    ))


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServicer):
    """Streams replies from the engine; a cancelled call closes the engine stream at once."""

    def __init__(self, engine: LanguageModelEngine) -> None:
        self._engine = engine

    @translate_errors
    async def Generate(self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        # aclosing: when the client cancels, the engine's cleanup (cancelling provider requests)
        # runs right here rather than whenever the abandoned generator is garbage-collected.
        async with contextlib.aclosing(self._engine.generate(chat_request(request))) as stream:
            async for item in stream:
                if isinstance(item, str):
                    yield llm_pb2.GenerateResponse(text_delta=item)
                elif isinstance(item, ToolCallDelta):
                    yield llm_pb2.GenerateResponse(tool_call_delta=llm_pb2.ToolCallDelta(
                        index=item.index, id=item.id, name=item.name,
                        arguments_delta=item.arguments_delta))
                else:
                    yield summary_message(item)

    @translate_errors
    async def ListProviders(self, request: llm_pb2.ListProvidersRequest,
                            context: grpc.aio.ServicerContext) -> llm_pb2.ListProvidersResponse:
        return llm_pb2.ListProvidersResponse(providers=[
            llm_pb2.ProviderStatus(name=p.name, model=p.model, available=p.available,
                                   circuit=p.circuit, reason=p.reason,
                                   supports_tools=p.supports_tools)
            for p in self._engine.provider_infos()
        ])
