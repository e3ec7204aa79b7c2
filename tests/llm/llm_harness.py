"""Helpers for the LLM gateway tests: an in-process gateway on a free port, request/reply helpers."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from voxline.common.config import ServerConfig
from voxline.common.server import ServiceSpec, start_server
from voxline.llm.cache import ReplyCache
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine, build_providers
from voxline.llm.provider import ChatProvider
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.v1 import llm_pb2, llm_pb2_grpc

GROQ_KEY = "gsk_TESTKEY0123456789abcdefSECRET"
CEREBRAS_KEY = "csk-TESTKEY0123456789abcdefSECRET"


class FakeClock:
    """A monotonic clock the test moves by hand (for circuit-breaker cool-downs)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Gateway:
    """A running in-process gateway and a client stub for it."""

    engine: LanguageModelEngine
    stub: Any
    port: int

    async def generate(self, text: str = "Bonjour, qui es-tu ?", **kwargs: Any) -> Reply:
        """Send one user message (or ``messages=``) and collect the whole reply."""
        return await collect(self.stub.Generate(request(text, **kwargs)))

    async def providers(self) -> list[Any]:
        return list((await self.stub.ListProviders(llm_pb2.ListProvidersRequest())).providers)


@dataclass
class Reply:
    deltas: list[str] = field(default_factory=list)
    summary: Any = None
    #: The tool-call deltas, in order (llm_pb2.ToolCallDelta).
    tool_deltas: list[Any] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def attempts(self) -> list[tuple[str, str]]:
        return [(a.provider, a.outcome) for a in self.summary.attempts]


def request(text: str = "Bonjour, qui es-tu ?", *, messages: Sequence[tuple[str, str]] | None = None,
            providers: Sequence[str] = (), no_cache: bool = False, **sampling: Any
            ) -> llm_pb2.GenerateRequest:
    pairs = messages if messages is not None else [("user", text)]
    return llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in pairs],
        providers=list(providers), no_cache=no_cache,
        sampling=llm_pb2.SamplingOptions(**sampling))


async def collect(call: Any) -> Reply:
    reply = Reply()
    async for message in call:
        kind = message.WhichOneof("event")
        if kind == "text_delta":
            assert reply.summary is None, "text after the summary"
            reply.deltas.append(message.text_delta)
        elif kind == "tool_call_delta":
            assert reply.summary is None, "a tool call after the summary"
            reply.tool_deltas.append(message.tool_call_delta)
        else:
            assert reply.summary is None, "two summaries"
            reply.summary = message.summary
    assert reply.summary is not None, "the stream ended without a summary"
    return reply


@contextlib.asynccontextmanager
async def running_gateway(config: LlmConfig, *, providers: list[ChatProvider] | None = None,
                          cache: ReplyCache | None = None,
                          clock: Callable[[], float] | None = None,
                          close_providers: bool = True) -> AsyncIterator[Gateway]:
    """Start the real gRPC server on a free port with an engine built from ``config``.

    ``close_providers=False`` leaves the providers open (a model shared by several tests).
    """
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    engine = LanguageModelEngine(providers if providers is not None else build_providers(config),
                                 config, cache, **kwargs)
    servicer = LanguageModelServicer(engine)
    spec = ServiceSpec(name="voxline-llm", grpc_services=[SERVICE_NAME],
                       register=lambda server: llm_pb2_grpc.add_LanguageModelServicer_to_server(
                           servicer, server),
                       warm_up=engine.warm_up, close=engine.aclose if close_providers else None)
    running = await start_server(spec, ServerConfig(port=0))
    try:
        await running.warm_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Gateway(engine, llm_pb2_grpc.LanguageModelStub(channel), running.port)
    finally:
        await running.stop(0)


def with_(config: LlmConfig, **changes: Any) -> LlmConfig:
    return dataclasses.replace(config, **changes)
