"""StreamingTranscribe's flow over a real grpc.aio server with a fake Transcriber (no model):
partials never block receiving, the final always comes, limits apply while chunks arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from voxline.common.config import ServerConfig
from voxline.common.errors import InvalidInput
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcript
from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

RATE = 16_000
ONE_SECOND = bytes(2 * RATE)


class FakeTranscriber:
    """Answers with the byte count it saw; partials wait until the test releases them."""

    max_audio_seconds = 60.0

    def __init__(self) -> None:
        self.partial_started = asyncio.Event()
        self.release_partial = asyncio.Event()
        self.partials_cancelled = 0

    async def warm_up(self) -> None:
        return None

    def check_options(self, options: RecognitionOptions) -> None:
        if options.language == "xx":
            raise InvalidInput("unsupported language 'xx'")

    def _result(self, audio: AudioInput) -> Transcript:
        return Transcript(text=f"{len(audio.data)} bytes", language="en", language_probability=1.0,
                          segments=(), audio_seconds=len(audio.data) / (2 * RATE),
                          processing_ms=1.0, decode_ms=0.1)

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        return self._result(audio)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        self.partial_started.set()
        try:
            await self.release_partial.wait()
        except asyncio.CancelledError:
            self.partials_cancelled += 1
            raise
        return self._result(audio)

    async def close(self) -> None:
        return None


@pytest.fixture
async def served() -> AsyncIterator[tuple[stt_pb2_grpc.SpeechToTextStub, FakeTranscriber]]:
    engine = FakeTranscriber()
    servicer = SpeechToTextServicer(engine, partial_interval_s=1.0, max_stream_bytes=10 * len(ONE_SECOND))

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    spec = ServiceSpec(name="voxline-stt-test", grpc_services=[SERVICE_NAME], register=register,
                       warm_up=engine.warm_up)
    running: RunningServer = await start_server(spec, ServerConfig(port=0))
    await running.warm_up()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield stt_pb2_grpc.SpeechToTextStub(channel), engine
    finally:
        await running.stop(0)


def pcm_config() -> stt_pb2.StreamingTranscribeRequest:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE, channels=1)
    return stt_pb2.StreamingTranscribeRequest(config=stt_pb2.RecognitionConfig(format=fmt))


def audio(data: bytes) -> stt_pb2.StreamingTranscribeRequest:
    return stt_pb2.StreamingTranscribeRequest(audio=data)


async def stream_until_a_partial_runs(stub: stt_pb2_grpc.SpeechToTextStub, engine: FakeTranscriber
                                      ) -> grpc.aio.StreamStreamCall:
    """Open a stream, send the config and 1 s of audio, return once the engine's partial has started."""
    call = stub.StreamingTranscribe()
    await call.write(pcm_config())
    await call.write(audio(ONE_SECOND))
    await asyncio.wait_for(engine.partial_started.wait(), 10)
    return call


async def test_a_running_partial_does_not_hold_back_the_final(
        served: tuple[stt_pb2_grpc.SpeechToTextStub, FakeTranscriber]) -> None:
    stub, engine = served
    call = await stream_until_a_partial_runs(stub, engine)
    # the partial is stuck; the rest of the audio and the half-close must still get through
    for _ in range(3):
        await call.write(audio(ONE_SECOND))
    await call.done_writing()
    engine.release_partial.set()
    replies = [reply async for reply in call]
    # the stuck partial (1 s), maybe later ones once released, then exactly one final of all 4 s
    assert [r.is_final for r in replies] == [False] * (len(replies) - 1) + [True]
    assert replies[0].result.text == f"{len(ONE_SECOND)} bytes"
    assert replies[-1].result.text == f"{4 * len(ONE_SECOND)} bytes"
    assert replies[-1].result.audio_seconds == pytest.approx(4.0)
    assert await call.code() == grpc.StatusCode.OK


async def test_limits_apply_while_a_partial_is_running(
        served: tuple[stt_pb2_grpc.SpeechToTextStub, FakeTranscriber]) -> None:
    stub, engine = served
    call = await stream_until_a_partial_runs(stub, engine)
    # the partial never finishes; receiving goes on, so the byte limit is hit and reported
    with pytest.raises(grpc.aio.AioRpcError) as info:
        for _ in range(12):
            await call.write(audio(ONE_SECOND))
        await call.done_writing()
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "bytes of audio" in (info.value.details() or "")
    assert engine.partials_cancelled == 1


async def test_no_partials_when_the_interval_is_negative(
        served: tuple[stt_pb2_grpc.SpeechToTextStub, FakeTranscriber]) -> None:
    stub, engine = served
    config = pcm_config()
    config.config.partial_interval_s = -1
    replies = [r async for r in stub.StreamingTranscribe(
        iter([config, audio(ONE_SECOND), audio(ONE_SECOND), audio(ONE_SECOND)]))]
    assert [r.is_final for r in replies] == [True]
    assert not engine.partial_started.is_set()


async def test_a_bad_config_is_refused_before_any_audio(
        served: tuple[stt_pb2_grpc.SpeechToTextStub, FakeTranscriber]) -> None:
    stub, _ = served
    call = stub.StreamingTranscribe()
    config = pcm_config()
    config.config.language = "xx"
    await call.write(config)
    # no audio, no half-close: the refusal must come anyway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), 10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "language" in (info.value.details() or "")
