"""Issue 20, STT side: the Listen stream under attack costs what its audio is worth, and no work
goes on for a client that is gone or a pass that was superseded.

The recogniser here is the real ``WhisperTranscriber`` (its admission gate, worker threads and
cancellation) over a scripted faster-whisper model at the process edge: it costs a fixed time per
segment and counts its runs, so each test says exactly how much recognition an attack bought.
The VAD hears a tone (no model); the gRPC tests run the real servicer on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest

from voxline.common import metrics
from voxline.common.audio import float_to_pcm16
from voxline.common.config import ServerConfig
from voxline.common.errors import LimitExceeded
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.stt.config import EngineSettings, LiveLimits, TurnSettings
from voxline.stt.detectors import TurnDetectors
from voxline.stt.endpoint import Endpointer, EndpointSettings
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcript, WhisperTranscriber
from voxline.stt.listen import EndTurn, Final, ListenRequest, listen_stream
from voxline.stt.passes import StreamPasses
from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
from voxline.stt.stream import StreamFormat
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

RATE = 16_000
CHUNK = 640  # 20 ms
OPTIONS = RecognitionOptions(language="en")
PCM = StreamFormat("pcm_s16le", RATE, 1)


class ScriptedWhisper:
    """A faster-whisper-like model: one segment per ``seconds_per_segment`` of audio, each costing
    ``segment_cost_s`` in the worker thread, or waiting (at most 10 s) for ``gate`` when given."""

    supported_languages = ("en",)

    def __init__(self, seconds_per_segment: float = 10.0, segment_cost_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.seconds_per_segment, self.segment_cost_s, self.gate = seconds_per_segment, segment_cost_s, gate
        self.started = threading.Event()  # a segment is being decoded
        self.runs = 0
        self.segments = 0

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Iterator[Any], Any]:
        self.runs += 1
        count = max(1, math.ceil(len(audio) / RATE / self.seconds_per_segment))

        def pieces() -> Iterator[Any]:
            for i in range(count):
                self.started.set()
                if self.gate is not None:
                    self.gate.wait(10)
                elif self.segment_cost_s:
                    time.sleep(self.segment_cost_s)  # the recogniser's cost, in its own thread
                self.segments += 1
                yield SimpleNamespace(start=i * 10.0, end=i * 10.0 + 10.0, text=f"words{i}",
                                      compression_ratio=1.0, avg_logprob=-0.1, tokens=[1, 2])

        return pieces(), SimpleNamespace(language="en", language_probability=1.0)


class ToneVad:
    """Speech for the frames whose first sample is not zero (no model)."""

    frame_samples = 320

    def probability(self, frame: np.ndarray) -> float:
        return 1.0 if frame[0] != 0 else 0.0


def tone(seconds: float) -> np.ndarray:
    return np.full(int(seconds * RATE), 0.5, dtype=np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def chunks(samples: np.ndarray) -> list[bytes]:
    data = float_to_pcm16(samples)
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def clip(seconds: float) -> AudioInput:
    return AudioInput(float_to_pcm16(tone(seconds)), "pcm_s16le", RATE, 1)


def endpointer() -> Endpointer:
    # pauses of 0.3 s are pauses (a pass each), not ends of turn
    return Endpointer(ToneVad(), EndpointSettings(pause_ms=100, early_pause_ms=0, silence_ms=1000))


async def inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def loop_turns(count: int = 5) -> None:
    """Let the event loop run what is ready (a cancellation being handled), ``count`` times."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_pass_cancelled_twice_keeps_its_worker_until_it_stops_at_its_next_segment() -> None:
    """The probe's reading of ``asyncio.shield``: a second cancellation released the admission slot
    while the worker thread still ran the job. Now the job is told to stop, stops at its next
    segment, and its slot is held until then."""
    gate = threading.Event()
    model = ScriptedWhisper(seconds_per_segment=1.0, gate=gate)
    engine = WhisperTranscriber(EngineSettings(num_workers=1, max_queued=0), model=model)
    try:
        running = asyncio.ensure_future(engine.transcribe(clip(5.0), OPTIONS))  # 5 segments
        assert await asyncio.to_thread(model.started.wait, 30)
        running.cancel()
        await loop_turns()
        running.cancel()
        await loop_turns()
        assert not running.done()  # still waiting for its thread
        # an old engine would admit the next job and wait for the thread: release it then
        asyncio.get_running_loop().call_soon(gate.set)
        with pytest.raises(LimitExceeded):  # the only worker is still taken
            await engine.transcribe(clip(1.0), OPTIONS)
        await asyncio.wait([running])
        assert running.cancelled()
        assert model.segments == 1  # stopped at its next segment, not after all 5
        assert (await engine.transcribe(clip(1.0), OPTIONS)).text == "words0"  # the worker is free
    finally:
        gate.set()
        await engine.close()


async def test_a_flooded_stream_leaves_no_work_behind_and_the_next_request_runs_at_once() -> None:
    """150 s of speech with a pause every 2 s, pushed at full speed: each pause's pass supersedes
    the last (dropped if queued, stopped at its next segment if running), the stream ends with
    RESOURCE_EXHAUSTED (100 s ahead of real time), and nothing of it is left queued: the next
    transcription is the next run."""
    model = ScriptedWhisper(seconds_per_segment=10.0, segment_cost_s=0.02)
    engine = WhisperTranscriber(EngineSettings(num_workers=1, max_queued=8), model=model)
    passes = StreamPasses(budget=100.0, burst_s=1000.0)  # no budget: this is about stale passes
    speech = np.concatenate([silence(0.2)] + [np.concatenate([tone(1.7), silence(0.3)])] * 75)

    async def requests() -> AsyncIterator[ListenRequest]:
        for chunk in chunks(speech):
            yield chunk

    try:
        with pytest.raises(LimitExceeded, match="faster than 1x real time"):
            async for _ in listen_stream(engine, endpointer(), PCM, OPTIONS, requests(),
                                         interim_interval_s=0.0, max_turn_seconds=120.0,
                                         run_blocking=inline, passes=passes,
                                         limits=LiveLimits(max_speed=1.0, burst_s=100.0)):
                pass
        runs, segments = model.runs, model.segments
        assert passes.started >= 50 and passes.superseded >= passes.started - runs
        assert runs < passes.started  # most stale passes never ran
        assert (await engine.transcribe(clip(2.0), OPTIONS)).text == "words0"
        assert (model.runs, model.segments) == (runs + 1, segments + 1)  # nothing ran before it
    finally:
        await engine.close()


async def test_end_of_turn_spam_keeps_one_pass_of_the_stream_queued() -> None:
    """The client marks the end of a turn it keeps continuing, 20 times before the first pass is
    done: each end's pass supersedes the last, the shared queue never holds more than one of
    them (8 would be "server busy" for everyone), and the turn ends once, with one Final."""
    gate = threading.Event()
    model = ScriptedWhisper(seconds_per_segment=30.0, gate=gate)
    engine = WhisperTranscriber(EngineSettings(num_workers=1, max_queued=8), model=model)

    async def requests() -> AsyncIterator[ListenRequest]:
        for chunk in chunks(np.concatenate([silence(0.2), tone(0.4)])):
            yield chunk
        for _ in range(20):
            yield EndTurn()
            for chunk in chunks(tone(0.4)):
                yield chunk
        yield EndTurn()
        gate.set()  # the last end of turn has been read: let the recogniser go on
        for chunk in chunks(silence(0.4)):
            yield chunk

    try:
        events = [e async for e in listen_stream(engine, endpointer(), PCM, OPTIONS, requests(),
                                                 interim_interval_s=0.0, max_turn_seconds=120.0,
                                                 run_blocking=inline)]
        finals = [e for e in events if isinstance(e, Final)]
        assert len(finals) == 1 and finals[0].transcript.text == "words0"
        assert model.runs == 2  # the first end's pass (stopped: stale) and the last one
    finally:
        gate.set()
        await engine.close()


class CostlyRecogniser:
    """A recogniser that reports 1 s of work per second of audio (a slow CPU); counts the audio of
    the passes it finished."""

    max_audio_seconds = 120.0

    def __init__(self) -> None:
        self.audio_s = 0.0

    def check_options(self, options: RecognitionOptions) -> None:
        return None

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        await asyncio.sleep(0)
        seconds = len(audio.data) / 2 / RATE
        self.audio_s += seconds
        return Transcript(text="words", language="en", language_probability=1.0, segments=(),
                          audio_seconds=seconds, processing_ms=seconds * 1000.0, decode_ms=0.0)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        return await self.transcribe(audio, options)


async def test_a_long_turn_with_many_pauses_costs_linear_recognition_not_quadratic() -> None:
    """50 s of speech with a pause every 2 s: each pause transcript re-reads the whole turn (2, 4,
    ... 50 s: 650 s of recognition). Within a budget of 1 s of recognition per second of audio
    (10 s saved up), the pause transcripts stop and the turn is transcribed once at its end."""
    engine = CostlyRecogniser()
    speech = np.concatenate([silence(0.2)] + [np.concatenate([tone(1.7), silence(0.3)])] * 25)

    async def requests() -> AsyncIterator[ListenRequest]:
        for chunk in chunks(speech):
            await asyncio.sleep(0)  # a pass may finish between chunks, as it would at 1x
            yield chunk
        yield EndTurn()

    passes = StreamPasses(budget=1.0, burst_s=10.0)
    events = [e async for e in listen_stream(engine, endpointer(), PCM, OPTIONS, requests(),
                                             interim_interval_s=0.0, max_turn_seconds=120.0,
                                             run_blocking=inline, passes=passes,
                                             limits=LiveLimits(burst_s=1000.0))]
    assert [type(e) for e in events].count(Final) == 1
    assert passes.refused > 0
    assert engine.audio_s <= 4 * 50  # linear in the turn (650 s without the budget)


async def stream_result(requests: AsyncIterator[ListenRequest], limits: LiveLimits) -> list[Any]:
    engine = CostlyRecogniser()
    return [e async for e in listen_stream(engine, endpointer(), PCM, OPTIONS, requests,
                                           interim_interval_s=0.0, max_turn_seconds=120.0,
                                           run_blocking=inline, limits=limits)]


async def test_two_byte_chunks_are_refused_past_a_slack() -> None:
    async def requests() -> AsyncIterator[ListenRequest]:
        for _ in range(5_000):
            yield b"\x00\x00"

    with pytest.raises(LimitExceeded, match="10 ms of audio on average"):
        await stream_result(requests(), LiveLimits())


async def test_audio_faster_than_real_time_is_refused_beyond_its_burst() -> None:
    async def requests() -> AsyncIterator[ListenRequest]:
        for chunk in chunks(silence(60.0)):  # at full speed: far faster than 1x
            yield chunk

    with pytest.raises(LimitExceeded, match="faster than 1x real time"):
        await stream_result(requests(), LiveLimits(max_speed=1.0, burst_s=5.0))


# --- over gRPC: the low-rate bomb and its variants ----------------------------------------------

@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    engine = WhisperTranscriber(EngineSettings(), model=ScriptedWhisper())
    turns = TurnDetectors(TurnSettings(detector="energy_vad", text_veto=False))
    servicer = SpeechToTextServicer(engine, partial_interval_s=1.0, max_stream_bytes=1 << 25, turns=turns)

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    async def warm_up() -> None:
        await engine.warm_up()
        await turns.warm_up()

    running: RunningServer = await start_server(
        ServiceSpec(name="voxline-stt-bounds", grpc_services=[SERVICE_NAME], register=register,
                    warm_up=warm_up, close=engine.close), ServerConfig(port=0, metrics_port=0))
    await running.warm_up()
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[stt_pb2_grpc.SpeechToTextStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=[
            ("grpc.max_send_message_length", 1 << 25)]) as channel:
        yield stt_pb2_grpc.SpeechToTextStub(channel)


async def listen(stub: stt_pb2_grpc.SpeechToTextStub, rate: int, *messages: stt_pb2.ListenRequest
                 ) -> list[stt_pb2.ListenResponse]:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=1)
    config = stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=fmt, language="en"),
        turn=stt_pb2.TurnConfig(detector=stt_pb2.ENERGY_VAD)))
    call = stub.Listen(iter([config, *messages]), timeout=60)
    return [reply async for reply in call]


@pytest.mark.parametrize(("rate", "mib", "code", "says"), [
    (1_000, 8, grpc.StatusCode.INVALID_ARGUMENT, "under 8000 Hz"),   # the probe's bomb
    (1_000, 31, grpc.StatusCode.INVALID_ARGUMENT, "under 8000 Hz"),  # scaled to the message limit
    (8_000, 16, grpc.StatusCode.RESOURCE_EXHAUSTED, "longer than a turn"),  # the orchestrator's floor
    (16_000, 31, grpc.StatusCode.RESOURCE_EXHAUSTED, "longer than a turn"),
])
async def test_a_huge_chunk_or_a_tiny_rate_gets_a_clear_status_and_the_server_goes_on(
        stub: stt_pb2_grpc.SpeechToTextStub, rate: int, mib: int, code: grpc.StatusCode, says: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await listen(stub, rate, stt_pb2.ListenRequest(audio=bytes(mib << 20)))
    assert caught.value.code() == code and says in (caught.value.details() or "")
    speech = float_to_pcm16(np.concatenate([silence(0.3), tone(0.6), silence(0.3)]))
    replies = await listen(stub, RATE, *[stt_pb2.ListenRequest(audio=speech[i:i + CHUNK])
                                         for i in range(0, len(speech), CHUNK)],
                           stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn()))
    assert [r.end_of_turn.transcript.text for r in replies if r.HasField("end_of_turn")] == ["words0"]


async def test_two_byte_chunks_over_grpc_end_with_resource_exhausted(server: RunningServer) -> None:
    """Through the sync client: grpc.aio's own client reports a write that fails as the server
    ends the call as INTERNAL instead of the server's status (grpc/grpc#36066)."""
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE, channels=1)
    messages = [stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=fmt, language="en"),
        turn=stt_pb2.TurnConfig(detector=stt_pb2.ENERGY_VAD)))]
    messages += [stt_pb2.ListenRequest(audio=b"\0\0")] * 5_000

    def call() -> grpc.RpcError:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                list(stt_pb2_grpc.SpeechToTextStub(channel).Listen(iter(messages), timeout=60))
            except grpc.RpcError as exc:
                return exc
        raise AssertionError("the stream of 2-byte chunks ended OK")

    error: Any = await asyncio.to_thread(call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "10 ms of audio on average" in error.details()


def listens_counted(port: int) -> float:
    """``voxline_server_active_requests`` for Listen, from the scrape endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == metrics.PROMETHEUS_ACTIVE_REQUESTS and s.labels.get("rpc_method") == "Listen")


async def test_streams_that_never_send_a_config_are_not_load(
        server: RunningServer, stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    """Item 8b: three Listen streams left open without a message do not move the autoscaler's
    figure; a stream that sent its config does."""
    port = metrics.endpoint_port()
    assert port is not None
    idle = [stub.Listen(timeout=60) for _ in range(3)]
    for call in idle:
        await call.wait_for_connection()
    talking = stub.Listen(timeout=60)
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE, channels=1)
    await talking.write(stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=fmt, language="en"),
        turn=stt_pb2.TurnConfig(detector=stt_pb2.ENERGY_VAD))))
    for chunk in chunks(np.concatenate([silence(0.2), tone(0.4)])):
        await talking.write(stt_pb2.ListenRequest(audio=chunk))
    reply = await talking.read()  # the server has read this stream's messages
    assert reply.HasField("speech_started")
    assert await asyncio.to_thread(listens_counted, port) == 1
    for call in [*idle, talking]:
        call.cancel()


async def test_a_many_channel_stream_keeps_its_turn_as_mono() -> None:
    """48 kHz x 8 channels: the turn is kept (and recognised) downmixed, 96 KB a second instead of
    768, so a turn at the widest format costs 8x less memory."""
    heard: list[AudioInput] = []

    class Capturing(CostlyRecogniser):
        async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
            heard.append(audio)
            return await super().transcribe(audio, options)

    rate, channels = 48_000, 8
    mono = np.concatenate([np.zeros(int(0.2 * rate)), np.full(rate, 0.5), np.zeros(int(1.2 * rate))])
    data = float_to_pcm16(np.repeat(mono, channels).astype(np.float32))
    frame = 960 * 2 * channels  # 20 ms

    async def requests() -> AsyncIterator[ListenRequest]:
        for i in range(0, len(data), frame):
            yield data[i:i + frame]

    fmt = StreamFormat("pcm_s16le", rate, channels)
    events = [e async for e in listen_stream(Capturing(), endpointer(), fmt,
                                             OPTIONS, requests(), interim_interval_s=0.0,
                                             max_turn_seconds=120.0, run_blocking=inline)]
    assert [type(e) for e in events].count(Final) == 1
    assert heard and all(a.channels == 1 and a.sample_rate == rate for a in heard)
    seconds = len(heard[-1].data) / 2 / rate
    assert 1.0 <= seconds <= 1.6  # the turn: pre-roll, 1 s of speech, its pause
    loud = np.frombuffer(float_to_pcm16(np.full(1, 0.5, dtype=np.float32)), dtype="<i2")[0]
    assert np.frombuffer(heard[-1].data, dtype="<i2").max() == loud  # the channels' mean
