"""A Converse session driven turn by turn, for the load and fault scenarios."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from voxline.testing.fake_servers import tone_pcm
from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

COMPLETED = "COMPLETED"
LOST = "LOST"


def pcm_config(**changes: Any) -> voice_pb2.SessionConfig:
    """16 kHz mono PCM in, PCM out: the cheapest session."""
    fields: dict[str, Any] = {
        "input_format": audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000,
                                              channels=1),
        "language": "en", **changes}
    return voice_pb2.SessionConfig(**fields)


@dataclass
class TurnResult:
    """How one turn ended: its TurnStatus name, or LOST (no metrics: the stream broke)."""

    status: str
    error: str = ""
    audio_bytes: int = 0
    first_output: bool = False


class Session:
    """One Converse stream; ``turn()`` sends a user turn and reads until its metrics."""

    def __init__(self, channel: grpc.aio.Channel, config: voice_pb2.SessionConfig | None = None
                 ) -> None:
        self._requests: asyncio.Queue[voice_pb2.ConverseRequest | None] = asyncio.Queue(maxsize=64)
        self._requests.put_nowait(voice_pb2.ConverseRequest(config=config or pcm_config()))
        self.call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse(self._feed())
        self.closed_code: str | None = None

    async def _feed(self) -> AsyncIterator[voice_pb2.ConverseRequest]:
        while True:
            item = await self._requests.get()
            if item is None:
                return
            yield item

    async def send(self, *requests: voice_pb2.ConverseRequest) -> None:
        """Queue requests; ones for a call that has already ended are dropped."""
        for request in requests:
            while not self.call.done():
                try:
                    async with asyncio.timeout(0.5):  # re-check the call while the queue is full
                        await self._requests.put(request)
                    break
                except TimeoutError:
                    continue

    async def send_turn(self, text: str = "", audio_s: float = 0.0) -> None:
        if audio_s > 0:
            await self.send(voice_pb2.ConverseRequest(audio=tone_pcm(audio_s)),
                            voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))
        else:
            await self.send(voice_pb2.ConverseRequest(text=text or "What is the capital of France?"))

    async def read_turn(self, timeout_s: float = 30.0) -> TurnResult:
        """Responses until this turn's metrics (or the end of the stream)."""
        result = TurnResult(LOST)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self.call.read()
                    if message is grpc.aio.EOF:
                        result.error = "stream ended"
                        return result
                    kind = message.WhichOneof("event")
                    if kind in ("assistant_text", "audio", "audio_format"):
                        result.first_output = True
                    if kind == "audio":
                        result.audio_bytes += len(message.audio)
                    elif kind == "metrics":
                        result.status = voice_pb2.TurnStatus.Name(message.metrics.status)
                        result.error = message.metrics.error
                        return result
        except TimeoutError:
            result.error = f"no metrics within {timeout_s:g} s"
        except grpc.aio.AioRpcError as exc:
            self.closed_code = exc.code().name
            result.error = f"{exc.code().name}: {exc.details()}"
        return result

    async def turn(self, text: str = "", audio_s: float = 0.0, timeout_s: float = 30.0) -> TurnResult:
        await self.send_turn(text, audio_s)
        return await self.read_turn(timeout_s)

    async def close(self, timeout_s: float = 10.0) -> str:
        """Half-close and read to the end; the final status code name."""
        await self._requests.put(None)
        try:
            async with asyncio.timeout(timeout_s):
                while await self.call.read() is not grpc.aio.EOF:
                    pass
            code = await self.call.code()
            self.closed_code = code.name
        except TimeoutError:
            self.call.cancel()
            self.closed_code = "HANG"
        except grpc.aio.AioRpcError as exc:
            self.closed_code = exc.code().name
        return self.closed_code or "?"

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.call.cancel()
