"""Fake STT, LLM and TTS gRPC servers (in process, real sockets) with scripted behaviour.

The one set of fake stages: the orchestrator's gRPC tests, ``bench.orchestrator_overhead`` and,
run as processes with fixed costs (``voxline.testing.fake_stage``), the benchmark suite's fake stack.
Each fake records what it was asked, when calls start, finish or are cancelled (as the service
sees it: its handler task is cancelled), and how long its own handlers took (for the benchmark).
Behaviour is changed by setting attributes between turns; ``gate`` events let a test hold a
stage at a known point and release it after observing something, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.v1 import (
    audio_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)


@dataclass
class CallLog:
    """What one fake saw."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0
    cancellations: int = 0
    #: Seconds each handler ran (server side), in call order.
    busy_s: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.started.clear()
        self.finished.clear()
        self.cancelled.clear()


class FakeServer:
    """A fake stage on 127.0.0.1; ``stop`` and ``start(port)`` take it down and bring it back."""

    name = "fake"
    grpc_service = ""

    def __init__(self) -> None:
        self.log = CallLog()
        self.fail: tuple[grpc.StatusCode, str] | None = None
        self._running: RunningServer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _register(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    def spec(self) -> ServiceSpec:
        """This fake as a service for the shared bootstrap (instant warm-up)."""
        async def warm_up() -> None:
            return None

        return ServiceSpec(name=f"fake-{self.name}", grpc_services=[self.grpc_service],
                           register=self._register, warm_up=warm_up)

    async def start(self, port: int = 0) -> FakeServer:
        self._running = await start_server(self.spec(), ServerConfig(port=port))
        await self._running.warm_up()
        self.port = self._running.port
        return self

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.stop(0)
            self._running = None

    async def _enter(self, context: Any) -> float:
        self.log.calls += 1
        self.log.started.set()
        if self.fail is not None:
            await context.abort(*self.fail)
        return time.perf_counter()

    def _cancelled(self) -> None:
        self.log.cancellations += 1
        self.log.cancelled.set()

    def _done(self, started: float) -> None:
        self.log.busy_s.append(time.perf_counter() - started)
        self.log.finished.set()


class FakeStt(FakeServer, stt_pb2_grpc.SpeechToTextServicer):
    """Answers every clip with ``transcript`` after ``latency_s``."""

    name = "stt"
    grpc_service = "voxline.v1.SpeechToText"

    def __init__(self, transcript: str = "What time is it?", latency_s: float = 0.0) -> None:
        super().__init__()
        self.transcript = transcript
        self.latency_s = latency_s
        self.requests: list[stt_pb2.TranscribeRequest] = []
        #: Listen: the script (texts per speech segment, Smart Turn's answers), configs received,
        #: ReplyStarted signals received.
        from voxline.testing.fake_listen import ListenScript

        self.listen_script = ListenScript()
        self.listen_configs: list[stt_pb2.ListenConfig] = []
        self.replies_started = 0

    def _register(self, server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(self, server)

    def _result(self, audio_bytes: int, language: str) -> stt_pb2.TranscribeResponse:
        return stt_pb2.TranscribeResponse(
            text=self.transcript, language=language or "en", language_probability=1.0,
            audio_seconds=audio_bytes / 32000.0, processing_ms=self.latency_s * 1000)

    async def Transcribe(self, request: stt_pb2.TranscribeRequest, context: Any
                         ) -> stt_pb2.TranscribeResponse:
        started = await self._enter(context)
        self.requests.append(request)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        self._done(started)
        return self._result(len(request.audio), request.config.language)

    async def StreamingTranscribe(self, request_iterator: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
                                  context: Any) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        """The whole stream, then one final result (no partials)."""
        started = await self._enter(context)
        received, language = 0, ""
        async for request in request_iterator:
            if request.HasField("config"):
                language = request.config.language
            received += len(request.audio)
        await asyncio.sleep(self.latency_s)
        self._done(started)
        yield stt_pb2.StreamingTranscribeResponse(is_final=True, result=self._result(received, language))

    async def Listen(self, request_iterator: AsyncIterator[stt_pb2.ListenRequest], context: Any
                     ) -> AsyncIterator[stt_pb2.ListenResponse]:
        """Real turn-taking decisions over a tone/silence detector, scripted texts (fake_listen)."""
        from voxline.stt.listen import Final
        from voxline.stt.servicer import listen_response
        from voxline.testing.fake_listen import ScriptedListener

        started = await self._enter(context)
        listener: ScriptedListener | None = None
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                if kind == "config":
                    c = request.config
                    fmt = c.recognition.format
                    self.listen_configs.append(c)
                    listener = ScriptedListener(
                        self.listen_script, fmt.sample_rate_hz, fmt.channels or 1,
                        detector=stt_pb2.TurnDetector.Name(c.turn.detector).lower().replace(
                            "turn_detector_unspecified", ""),
                        complete_silence_ms=c.turn.complete_silence_ms,
                        incomplete_silence_ms=c.turn.incomplete_silence_ms, silence_ms=c.turn.silence_ms)
                    continue
                if listener is None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be config")
                    return
                if kind == "audio":
                    events = listener.audio(request.audio)
                elif kind == "end_turn":
                    events = listener.end_turn()
                else:
                    listener.reply_started()
                    self.replies_started += 1
                    events = []
                for event in events:
                    if isinstance(event, Final) and self.listen_script.final_delay_s:
                        await asyncio.sleep(self.listen_script.final_delay_s)  # a busy recogniser
                    yield listen_response(event)
            for event in listener.finish() if listener is not None else []:
                yield listen_response(event)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        self._done(started)


class FakeLlm(FakeServer, llm_pb2_grpc.LanguageModelServicer):
    """Streams ``deltas`` (``delta_delay_s`` before each), then a summary.

    With ``gate`` set, the reply stops after ``gate_after`` deltas until the test sets the event.
    """

    name = "llm"
    grpc_service = "voxline.v1.LanguageModel"

    def __init__(self, deltas: list[str] | None = None, delta_delay_s: float = 0.0,
                 first_delay_s: float = 0.0) -> None:
        super().__init__()
        self.deltas = deltas if deltas is not None else ["Hello there. ", "How can ", "I help?"]
        self.delta_delay_s = delta_delay_s
        self.first_delay_s = first_delay_s
        self.gate: asyncio.Event | None = None
        self.gate_after = 1
        self.requests: list[llm_pb2.GenerateRequest] = []

    def _register(self, server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LanguageModelServicer_to_server(self, server)

    async def Generate(self, request: llm_pb2.GenerateRequest, context: Any
                       ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        started = await self._enter(context)
        self.requests.append(request)
        deltas, gate = list(self.deltas), self.gate  # later changes apply to later calls
        try:
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            for i, delta in enumerate(deltas):
                if gate is not None and i == self.gate_after:
                    await gate.wait()
                if self.delta_delay_s and i:
                    await asyncio.sleep(self.delta_delay_s)
                yield llm_pb2.GenerateResponse(text_delta=delta)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        elapsed = time.perf_counter() - started
        self._done(started)
        yield llm_pb2.GenerateResponse(summary=llm_pb2.GenerateSummary(
            provider="fake", model="fake-model-1", time_to_first_token_ms=self.first_delay_s * 1000,
            total_ms=elapsed * 1000, cache_hit=False, finish_reason="stop",
            usage=llm_pb2.TokenUsage(prompt_tokens=12, completion_tokens=len(deltas))))

    async def ListProviders(self, request: llm_pb2.ListProvidersRequest, context: Any
                            ) -> llm_pb2.ListProvidersResponse:
        return llm_pb2.ListProvidersResponse(providers=[llm_pb2.ProviderStatus(
            name="fake", model="fake-model-1", available=True, circuit="closed")])


class FakeTts(FakeServer, tts_pb2_grpc.TextToSpeechServicer):
    """Speaks ``seconds_per_char`` of a 440 Hz tone per character, in ``chunks`` chunks.

    Before the first chunk, ``first_audio_s`` + ``cost_per_char_s`` × characters pass (a model
    that synthesises the whole request before any audio); with ``gate`` set, audio also waits for
    the event.
    """

    name = "tts"
    grpc_service = "voxline.v1.TextToSpeech"

    def __init__(self, sample_rate: int = 16000, first_audio_s: float = 0.0,
                 seconds_per_char: float = 0.005, chunks: int = 2) -> None:
        super().__init__()
        self.voices = ["fake:en", "fake:fr"]
        self.sample_rate = sample_rate
        self.first_audio_s = first_audio_s
        self.cost_per_char_s = 0.0
        self.seconds_per_char = seconds_per_char
        self.chunks = chunks
        self.gate: asyncio.Event | None = None
        self.texts: list[str] = []
        #: The voice each Synthesize asked for.
        self.voices_used: list[str] = []

    def _register(self, server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TextToSpeechServicer_to_server(self, server)

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: Any
                         ) -> tts_pb2.ListVoicesResponse:
        return tts_pb2.ListVoicesResponse(voices=[
            tts_pb2.Voice(name=v, engine="fake", language=v.split(":")[-1],
                          sample_rate_hz=self.sample_rate) for v in self.voices])

    async def _synthesis_cost(self, text: str) -> None:
        """The wait before a request's first audio (after its format went out)."""
        cost = self.first_audio_s + self.cost_per_char_s * len(text)
        if cost:
            await asyncio.sleep(cost)

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: Any
                         ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        started = await self._enter(context)
        self.texts.append(request.text)
        self.voices_used.append(request.voice)
        gate = self.gate
        rate = request.output_format.sample_rate_hz or self.sample_rate
        try:
            yield tts_pb2.SynthesizeResponse(format=audio_pb2.AudioFormat(
                encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=1))
            await self._synthesis_cost(request.text)
            if gate is not None:
                await gate.wait()
            pcm = tone_pcm(len(request.text) * self.seconds_per_char, rate)
            step = -(-len(pcm) // self.chunks) // 2 * 2 or 2
            for i in range(0, len(pcm), step):
                yield tts_pb2.SynthesizeResponse(audio=tts_pb2.AudioChunk(
                    data=pcm[i:i + step], sentence_index=0, sentence=request.text if i == 0 else ""))
        except asyncio.CancelledError:
            self._cancelled()
            raise
        self._done(started)


def tone_pcm(seconds: float, rate: int = 16000, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM s16le."""
    n = max(1, int(seconds * rate))
    t = np.arange(n, dtype=np.float32) / rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def silence_pcm(seconds: float, rate: int = 16000) -> bytes:
    """Digital silence as PCM s16le."""
    return bytes(2 * int(seconds * rate))


class FakeStack:
    """The three fakes, started together."""

    def __init__(self) -> None:
        self.stt = FakeStt()
        self.llm = FakeLlm()
        self.tts = FakeTts()

    async def start(self) -> FakeStack:
        for fake in (self.stt, self.llm, self.tts):
            await fake.start()
        return self

    async def stop(self) -> None:
        for fake in (self.stt, self.llm, self.tts):
            await fake.stop()
