"""Test harness: the real orchestrator server in process, pointed at fakes, and a Converse client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, start_server
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
from voxline.orchestrator.service import orchestrator_spec
from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

#: Safety net for reads in tests: a test that would hang fails after this long instead.
READ_TIMEOUT_S = 10.0


async def start_orchestrator(stt: str, llm: str, tts: str, **overrides: Any) -> RunningServer:
    """The real orchestrator on a free port, SERVING."""
    config = OrchestratorConfig(
        stt_address=stt, llm_address=llm, tts_address=tts,
        deadlines=overrides.pop("deadlines", Deadlines(
            stt_s=5, llm_ttft_s=5, llm_total_s=10, tts_s=5, control_s=2)),
        **overrides,
    )
    running = await start_server(orchestrator_spec(config), ServerConfig(port=0))
    await running.warm_up()
    return running


@dataclass
class Turn:
    """Everything one turn sent, in order."""

    events: list[voice_pb2.ConverseResponse] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        """Event kinds in order, runs of the same kind collapsed."""
        out: list[str] = []
        for e in self.events:
            kind = e.WhichOneof("event")
            if not out or out[-1] != kind:
                out.append(kind)
        return out

    @property
    def transcript(self) -> str:
        return next(e.transcript.text for e in self.events if e.HasField("transcript"))

    @property
    def text(self) -> str:
        return "".join(e.assistant_text.delta for e in self.events if e.HasField("assistant_text"))

    @property
    def audio(self) -> bytes:
        return b"".join(e.audio for e in self.events if e.WhichOneof("event") == "audio")

    @property
    def metrics(self) -> voice_pb2.TurnMetrics:
        last = self.events[-1]
        assert last.HasField("metrics"), f"turn did not end with metrics: {self.kinds}"
        return last.metrics

    @property
    def number(self) -> int:
        return self.events[-1].turn


class Conversation:
    """A Converse call driven step by step (write, then read what comes back)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()

    async def config(self, **fields: Any) -> None:
        await self.call.write(voice_pb2.ConverseRequest(config=voice_pb2.SessionConfig(**fields)))

    async def text(self, text: str) -> None:
        await self.call.write(voice_pb2.ConverseRequest(text=text))

    async def audio(self, data: bytes, chunk: int = 3200) -> None:
        for i in range(0, len(data), chunk):
            await self.call.write(voice_pb2.ConverseRequest(audio=data[i:i + chunk]))

    async def end_of_utterance(self) -> None:
        await self.call.write(voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))

    async def read(self) -> voice_pb2.ConverseResponse:
        event = await asyncio.wait_for(self.call.read(), READ_TIMEOUT_S)
        assert event is not grpc.aio.EOF, "stream ended"
        return event  # type: ignore[no-any-return]

    async def read_until(self, kind: str) -> Turn:
        """Read events up to and including the first of ``kind``."""
        turn = Turn()
        while True:
            event = await self.read()
            turn.events.append(event)
            if event.WhichOneof("event") == kind:
                return turn

    async def read_turn(self) -> Turn:
        """Read one whole turn (up to its metrics)."""
        return await self.read_until("metrics")

    async def error(self) -> grpc.aio.AioRpcError:
        """Read until the call fails; return its error."""
        try:
            while await asyncio.wait_for(self.call.read(), READ_TIMEOUT_S) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("the call ended without an error")


PCM16K = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=1)
