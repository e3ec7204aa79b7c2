"""The edge's tests' support: the edge runs in the test's event loop (aiohttp on 127.0.0.1:0) in front of a
scripted orchestrator (a real gRPC server on 127.0.0.1:0 speaking VoiceAssistant.Converse) or, in
the phone and browser tests, the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from voxline.edge.app import Edge, build_app
from voxline.edge.config import EdgeConfig
from voxline.edge.webrtc import use_host_addresses
from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

#: WebRTC on loopback only: aioice offers no 127.0.0.1 candidate by default.
use_host_addresses(["127.0.0.1"])

REPLY_RATE = 22_050


def tone(seconds: float, rate: int = REPLY_RATE, amplitude: float = 8000.0) -> bytes:
    """A 440 Hz tone, 16-bit mono PCM: reply audio whose level a client can hear."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype(np.int16).tobytes()


class ScriptedOrchestrator(voice_pb2_grpc.VoiceAssistantServicer):
    """Converse as the orchestrator answers it: once the client has sent ``speech_chunks`` audio
    chunks, turn 1's transcript, text and ``reply_s`` of audio (then COMPLETED); audio chunks after
    that, while ``interrupt`` is set, cut the turn (INTERRUPTED metrics) as a barge-in does."""

    def __init__(self, reply_s: float = 3.0, speech_chunks: int = 10, interrupt: bool = False) -> None:
        self.reply_s, self.speech_chunks, self.interrupt = reply_s, speech_chunks, interrupt
        self.configs: list[voice_pb2.SessionConfig] = []
        self.streams = 0
        self.health: health.aio.HealthServicer | None = None

    async def Converse(self, request_iterator: AsyncIterator[voice_pb2.ConverseRequest],
                       context: Any) -> AsyncIterator[voice_pb2.ConverseResponse]:
        self.streams += 1
        chunks, replied = 0, False
        async for request in request_iterator:
            if request.HasField("config"):
                self.configs.append(request.config)
                continue
            chunks += 1
            if chunks == self.speech_chunks and not replied:
                replied = True
                yield voice_pb2.ConverseResponse(
                    turn=1, transcript=voice_pb2.Transcript(text="hello", language="en"))
                yield voice_pb2.ConverseResponse(turn=1, assistant_text=voice_pb2.AssistantText(delta="Hi."))
                yield voice_pb2.ConverseResponse(turn=1, audio_format=audio_pb2.AudioFormat(
                    encoding=audio_pb2.PCM_S16LE, sample_rate_hz=REPLY_RATE, channels=1))
                audio = tone(self.reply_s)
                for i in range(0, len(audio), 8820):
                    yield voice_pb2.ConverseResponse(turn=1, audio=audio[i:i + 8820])
                if not self.interrupt:
                    yield voice_pb2.ConverseResponse(turn=1, metrics=voice_pb2.TurnMetrics(
                        status=voice_pb2.COMPLETED, trace_id="0af7651916cd43dd8448eb211c80319c"))
            elif replied and self.interrupt and chunks == self.speech_chunks + 100:
                # two seconds later (20 ms chunks): the user talks over the reply
                yield voice_pb2.ConverseResponse(turn=1, metrics=voice_pb2.TurnMetrics(
                    status=voice_pb2.INTERRUPTED, trace_id="0af7651916cd43dd8448eb211c80319c"))


@dataclasses.dataclass
class RunningEdge:
    edge: Edge
    url: str


@contextlib.asynccontextmanager
async def edge_app(orchestrator: str) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**EdgeConfig fields)``: an edge in this event loop, in front of ``orchestrator``."""
    runners: list[web.AppRunner] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**fields: Any) -> RunningEdge:
        config = EdgeConfig(port=0, orchestrator=orchestrator, **fields)
        channel = grpc.aio.insecure_channel(config.orchestrator)
        channels.append(channel)
        edge = Edge(config, channel)
        runner = web.AppRunner(build_app(edge), shutdown_timeout=2.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return RunningEdge(edge, f"http://127.0.0.1:{runner.addresses[0][1]}")

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()
        for channel in channels:
            await channel.close()


def speech_like(seconds: float, rate: int = 16_000) -> bytes:
    """A voiced signal (not silence) for a microphone, 16-bit mono PCM."""
    return tone(seconds, rate, 9000.0)


@contextlib.asynccontextmanager
async def serve_orchestrator(orchestrator: ScriptedOrchestrator) -> AsyncIterator[str]:
    """``orchestrator`` as a real gRPC server on 127.0.0.1:0 (with health); its address."""
    server = grpc.aio.server()
    voice_pb2_grpc.add_VoiceAssistantServicer_to_server(orchestrator, server)
    orchestrator.health = health.aio.HealthServicer()
    await orchestrator.health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(orchestrator.health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def edge_starter(orchestrator: ScriptedOrchestrator) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**EdgeConfig fields)``: a scripted orchestrator and an edge in front."""
    async with serve_orchestrator(orchestrator) as address, edge_app(address) as start:
        yield start


async def until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait (bounded) until ``predicate()`` holds: state another task owns (a session's slot freed
    after its peer closed, frames counted by the client's reader) and that signals nothing."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - polled, bounded by the timeout
            await asyncio.sleep(0.02)
