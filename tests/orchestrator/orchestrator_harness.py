"""Test harness: the real orchestrator server in process, pointed at fakes; a view of a turn's events
read with the one Converse client helper, ``voxline.cli.client.Conversation``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from voxline.cli.client import Conversation
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, start_server
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
from voxline.orchestrator.wiring import build_spec
from voxline.v1 import audio_pb2, voice_pb2

#: Safety net for reads in tests: a test that would hang fails after this long instead.
READ_TIMEOUT_S = 10.0


async def start_orchestrator(stt: str, llm: str, tts: str, **overrides: Any) -> RunningServer:
    """The real orchestrator on a free port, SERVING."""
    config = OrchestratorConfig(
        stt_address=stt, llm_address=llm, tts_address=tts,
        deadlines=overrides.pop("deadlines", Deadlines(
            stt_s=5, llm_ttft_s=5, llm_total_s=10, tts_s=5, control_s=2)),
        stage_wait_s=overrides.pop("stage_wait_s", 0.0),  # tests with stages down start at once
        stage_retry_wait_s=overrides.pop("stage_retry_wait_s", 0.0),  # ...and fail at once
        **overrides,
    )
    running = await start_server(build_spec(config), ServerConfig(port=0))
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


def converse(channel: grpc.aio.Channel) -> Conversation:
    """A Converse call on ``channel``, driven step by step, every read bounded in time."""
    return Conversation.on_channel(channel, read_timeout_s=READ_TIMEOUT_S)


def settings(**fields: Any) -> voice_pb2.SessionConfig:
    return voice_pb2.SessionConfig(**fields)


async def read_until(conv: Conversation, kind: str) -> Turn:
    """Events up to and including the first of ``kind``."""
    return Turn(await conv.read_until(kind))


async def read_turn(conv: Conversation) -> Turn:
    """One whole turn (up to its metrics)."""
    return await read_until(conv, "metrics")


PCM16K = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=1)
