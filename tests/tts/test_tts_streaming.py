"""Streaming and cancellation, through a real in-process server on a free port, with a fake voice
behind the Voice protocol whose synthesis of one chosen sentence waits for the test's go."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, start_server
from voxline.tts.config import TtsConfig
from voxline.tts.engine import SynthesisOutcome
from voxline.tts.voices import VoiceBook
from voxline.tts.wiring import build_spec
from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

RATE = 16_000
PCM = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE)
GUARD_S = 15  # a failure guard only: every wait below ends on an event, not on time


class HeldVoice:
    """Says every sentence as 0.5 s of tone; the sentence ``hold`` waits until ``release`` is set."""

    name = "fake:held"
    engine = "fake"
    language = "en"
    sample_rate = RATE

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.started: list[str] = []
        self.finished: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def synthesize(self, sentence: str) -> np.ndarray:
        self.started.append(sentence)
        if sentence == self.hold:
            self.holding.set()
            if not self.release.wait(GUARD_S):
                raise TimeoutError("the test never released the held sentence")
        self.finished.append(sentence)
        return np.full(RATE // 2, 0.25, dtype=np.float32)


@dataclass
class Harness:
    voice: HeldVoice
    stub: tts_pb2_grpc.TextToSpeechStub
    outcomes: asyncio.Queue[SynthesisOutcome]
    server: RunningServer


async def _serve(voice: HeldVoice, warm: bool = True, config: TtsConfig | None = None
                 ) -> AsyncIterator[Harness]:
    outcomes: asyncio.Queue[SynthesisOutcome] = asyncio.Queue()
    spec = build_spec(config or TtsConfig(), load=lambda _config: VoiceBook([voice]),
                            on_finished=outcomes.put_nowait)
    server = await start_server(spec, ServerConfig(port=0))
    if warm:
        await server.warm_up()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Harness(voice, tts_pb2_grpc.TextToSpeechStub(channel), outcomes, server)
    finally:
        voice.release.set()
        await channel.close()
        await server.stop(0)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in _serve(HeldVoice(hold="Three.")):
        yield h


async def _read(call: grpc.aio.UnaryStreamCall) -> tts_pb2.SynthesizeResponse:
    reply = await asyncio.wait_for(call.read(), GUARD_S)
    assert reply is not grpc.aio.EOF
    return reply


async def test_first_audio_arrives_before_the_last_sentence_is_synthesised(harness: Harness) -> None:
    call = harness.stub.Synthesize(tts_pb2.SynthesizeRequest(text="One. Two. Three.", output_format=PCM))
    fmt = await _read(call)
    assert (fmt.format.encoding, fmt.format.sample_rate_hz, fmt.format.channels) == \
        (audio_pb2.PCM_S16LE, RATE, 1)
    first = await _read(call)  # would time out if the server waited for the whole text
    assert (first.audio.sentence_index, first.audio.sentence) == (0, "One.")
    assert "Three." not in harness.voice.finished
    harness.voice.release.set()
    rest = [reply async for reply in call]
    assert await call.code() == grpc.StatusCode.OK
    assert [(r.audio.sentence_index, r.audio.sentence) for r in rest] == [(1, "Two."), (2, "Three.")]
    assert all(len(r.audio.data) == RATE for r in [first, *rest])  # 0.5 s of 16-bit samples each
    outcome = await asyncio.wait_for(harness.outcomes.get(), GUARD_S)
    assert not outcome.cancelled and outcome.sentences_synthesised == 3
    assert outcome.first_audio_seconds is not None and outcome.first_audio_seconds < outcome.total_seconds


async def test_cancelling_the_call_stops_the_remaining_sentences(harness: Harness) -> None:
    voice = harness.voice
    text = "One. Two. Three. Four. Five. Six."
    call = harness.stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, output_format=PCM))
    await _read(call)
    assert (await _read(call)).audio.sentence == "One."
    assert await asyncio.to_thread(voice.holding.wait, GUARD_S), "the server never reached Three."
    call.cancel()
    outcome = await asyncio.wait_for(harness.outcomes.get(), GUARD_S)
    assert outcome.cancelled
    assert (outcome.sentences_synthesised, outcome.sentences_total) == (2, 6)
    # Let the sentence that was running finish in its thread; nothing may follow it.
    voice.release.set()
    again = [r async for r in harness.stub.Synthesize(
        tts_pb2.SynthesizeRequest(text="Again.", output_format=PCM))]
    assert [r.WhichOneof("event") for r in again] == ["format", "audio"]
    assert voice.started == ["One.", "Two.", "Three.", "Again."]


async def test_calls_before_the_voices_are_loaded_are_unavailable() -> None:
    async for h in _serve(HeldVoice(hold=""), warm=False):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await h.stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=GUARD_S)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await h.server.warm_up()
        voices = await h.stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=GUARD_S)
        assert [v.name for v in voices.voices] == ["fake:held"]


async def test_a_saturated_server_refuses_with_resource_exhausted() -> None:
    async for h in _serve(HeldVoice(hold="Busy."), config=TtsConfig(max_active=1, max_queued=0)):
        busy = h.stub.Synthesize(tts_pb2.SynthesizeRequest(text="Busy.", output_format=PCM))
        await _read(busy)  # the format: this call holds the only slot
        assert await asyncio.to_thread(h.voice.holding.wait, GUARD_S)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await h.stub.Synthesize(tts_pb2.SynthesizeRequest(text="Me too.", output_format=PCM)).read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server busy" in (info.value.details() or "")
        h.voice.release.set()
        assert [r.audio.sentence async for r in busy] == ["Busy."]
