"""The stack for the tool tests: the real LLM gateway (real Groq SDK) against the fake Groq HTTP
server, fake STT and TTS, and the real orchestrator with tools (MCP servers and/or client tools)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from fakes.chat_server import FakeChatServer

from voxline.cli.client import Conversation
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
from voxline.orchestrator.tools.settings import ToolSettings
from voxline.orchestrator.wiring import build_spec
from voxline.testing.fake_servers import FakeStt, FakeTts
from voxline.v1 import llm_pb2_grpc, voice_pb2

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEST_SERVER = HERE / "mcp_tool_server.py"
EXAMPLE_CONFIG = REPO / "examples" / "mcp.json"
GROQ_KEY = "gsk_TESTKEY0123456789abcdefSECRET"
CEREBRAS_KEY = "csk-TESTKEY0123456789abcdefSECRET"
#: Safety net: a read that would hang fails after this long.
READ_TIMEOUT_S = 20.0


def stdio_config(path: Path, events: Path, server: Path = TEST_SERVER) -> Path:
    """An mcpServers file that starts ``server`` over stdio, its events going to ``events``."""
    path.write_text(json.dumps({"mcpServers": {"shop": {
        "command": "python", "args": [str(server)], "env": {"VOXLINE_TEST_MCP_EVENTS": str(events)}}}}))
    return path


def http_config(path: Path, url: str) -> Path:
    path.write_text(json.dumps({"mcpServers": {"shop": {"url": url}}}))
    return path


@contextlib.asynccontextmanager
async def http_mcp_server(events: Path) -> AsyncIterator[str]:
    """The test MCP server as a subprocess serving streamable HTTP; yields its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(TEST_SERVER), "--http", stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "VOXLINE_TEST_MCP_EVENTS": str(events)})
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        process.terminate()
        await process.wait()


def events_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def calls_in(path: Path) -> list[str]:
    """The server's events without its "boot" lines."""
    return [line for line in events_of(path) if line != "boot"]


async def wait_for_event(path: Path, line: str, within_s: float = 10.0) -> list[str]:
    """The server's events once ``line`` is among them (a bounded poll of another process's
    file: the MCP server is a separate process with no other way to tell us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while line not in events_of(path):
        if loop.time() > deadline:
            raise AssertionError(f"the MCP server never logged {line!r}: {events_of(path)}")
        await asyncio.sleep(0.02)
    return events_of(path)


@dataclass
class Stack:
    groq: FakeChatServer
    stt: FakeStt
    tts: FakeTts
    gateway: RunningServer
    orchestrator: RunningServer
    channel: grpc.aio.Channel

    def conversation(self) -> Conversation:
        return Conversation.on_channel(self.channel, read_timeout_s=READ_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running_stack(groq: FakeChatServer, tools: ToolSettings, *,
                        llm_config: LlmConfig | None = None, **overrides: Any) -> AsyncIterator[Stack]:
    """Gateway (Groq only, no cache, no hedging; or ``llm_config``) + fake STT/TTS + the
    orchestrator with ``tools``."""
    llm_config = llm_config or LlmConfig(
        providers=("groq",), groq_api_key=GROQ_KEY, groq_base_url=groq.url, request_timeout_s=10.0,
        hedge_delay="off", local_model="none", cache_max_words=0)
    engine = LanguageModelEngine.from_config(llm_config)
    servicer = LanguageModelServicer(engine)
    spec = ServiceSpec(name="voxline-llm", grpc_services=[SERVICE_NAME],
                       register=lambda server: llm_pb2_grpc.add_LanguageModelServicer_to_server(
                           servicer, server),
                       warm_up=engine.warm_up, close=engine.aclose)
    stt, tts = FakeStt(), FakeTts()
    await stt.start()
    await tts.start()
    gateway = await start_server(spec, ServerConfig(port=0))
    await gateway.warm_up()
    config = OrchestratorConfig(
        stt_address=stt.address, llm_address=f"127.0.0.1:{gateway.port}", tts_address=tts.address,
        deadlines=Deadlines(stt_s=5, llm_ttft_s=5, llm_total_s=20, tts_s=5, control_s=2),
        stage_wait_s=0.0, stage_retry_wait_s=0.0, tools=tools, **overrides)
    orchestrator = await start_server(build_spec(config), ServerConfig(port=0))
    try:
        await orchestrator.warm_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            yield Stack(groq, stt, tts, gateway, orchestrator, channel)
    finally:
        await orchestrator.stop(0)
        await gateway.stop(0)
        await tts.stop()
        await stt.stop()


@dataclass
class Turn:
    events: list[voice_pb2.ConverseResponse] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.assistant_text.delta for e in self.events if e.HasField("assistant_text"))

    @property
    def audio(self) -> bytes:
        return b"".join(e.audio for e in self.events if e.WhichOneof("event") == "audio")

    @property
    def metrics(self) -> voice_pb2.TurnMetrics:
        assert self.events[-1].HasField("metrics"), [e.WhichOneof("event") for e in self.events]
        return self.events[-1].metrics

    def of(self, kind: str) -> list[Any]:
        return [getattr(e, kind) for e in self.events if e.WhichOneof("event") == kind]


async def text_turn(conv: Conversation, text: str) -> Turn:
    await conv.send_text(text)
    return Turn(await conv.read_until("metrics"))


def session(**fields: Any) -> voice_pb2.SessionConfig:
    return voice_pb2.SessionConfig(**fields)
