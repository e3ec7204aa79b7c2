"""Resource checks: each bad-input class ("bomb") sent a few times; the service's RSS is measured
after a good request before and after, and must not grow past the bound."""

from __future__ import annotations

import io
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from bench.reliability import procs
from bench.reliability.converse import Session, pcm_config
from bench.reliability.fuzz import _wav
from bench.reliability.matrix import Matrix
from voxline.testing.fake_servers import tone_pcm
from voxline.v1 import (
    audio_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
    voice_pb2,
)

Send = Callable[[grpc.aio.Channel], Awaitable[str]]


@dataclass(frozen=True)
class Bomb:
    """One bad-input class against one service."""

    name: str
    send: Send
    #: Status codes that count as handled (OK included where the request is legitimate but big).
    accepted: Sequence[str]


def flac_silence(minutes: float, rate: int = 16000) -> bytes:
    """Silence as FLAC: a few hundred KiB that decode to ``minutes`` of audio."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, rate * 10), dtype=np.int16)
        for index in range(int(minutes * 6)):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, index * rate * 10
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def lying_wav() -> bytes:
    """A WAV whose header claims 2 GB of data over one second of audio."""
    wav = bytearray(_wav(tone_pcm(1.0)))
    wav[4:8] = struct.pack("<I", 0x7FFFFFF0)
    wav[40:44] = struct.pack("<I", 0x7FFFFFC8)
    return bytes(wav)


async def _code(call: Awaitable[object]) -> str:
    try:
        await call
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)


async def _stream_code(call: object) -> str:
    try:
        async for _ in call:  # type: ignore[attr-defined]
            pass
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)


def stt_bombs(flac_minutes: float) -> list[Bomb]:
    flac = flac_silence(flac_minutes)

    def transcribe(encoding: audio_pb2.AudioEncoding.ValueType, audio: bytes, rate: int = 0,
                   channels: int = 0) -> Send:
        async def send(channel: grpc.aio.Channel) -> str:
            fmt = audio_pb2.AudioFormat(encoding=encoding, sample_rate_hz=rate, channels=channels)
            request = stt_pb2.TranscribeRequest(config=stt_pb2.RecognitionConfig(format=fmt),
                                                audio=audio)
            return await _code(stt_pb2_grpc.SpeechToTextStub(channel).Transcribe(request, timeout=120))
        return send

    return [
        Bomb(f"stt FLAC silence {flac_minutes:g} min ({len(flac) // 1024} KiB)",
             transcribe(audio_pb2.FLAC, flac), ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")),
        Bomb("stt WAV header claiming 2 GB", transcribe(audio_pb2.WAV, lying_wav()),
             ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")),
        Bomb("stt PCM declared 2e9 Hz × 8 ch", transcribe(audio_pb2.PCM_S16LE, bytes(1 << 20),
                                                          2_000_000_000, 8),
             ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")),
        Bomb("stt ffconcat file list as FLAC",
             transcribe(audio_pb2.FLAC, b"ffconcat version 1.0\nfile secret_note.wav\n"),
             ("INVALID_ARGUMENT",)),
    ]


def tts_bombs() -> list[Bomb]:
    def synth(text: str, voice: str) -> Send:
        async def send(channel: grpc.aio.Channel) -> str:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            return await _stream_code(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, voice=voice),
                                                      timeout=300))
        return send

    return [Bomb("tts piper:joe 中×400", synth("中" * 400, "piper:joe"), ("RESOURCE_EXHAUSTED",)),
            Bomb("tts espeak:en 中×400", synth("中" * 400, "espeak:en"), ("OK", "RESOURCE_EXHAUSTED")),
            Bomb("tts espeak:en 5,000 chars, no punctuation", synth("ab " * 1666, "espeak:en"),
                 ("OK", "RESOURCE_EXHAUSTED"))]


def llm_bombs() -> list[Bomb]:
    def generate(text: str, **sampling: object) -> Send:
        async def send(channel: grpc.aio.Channel) -> str:
            request = llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content=text)],
                sampling=llm_pb2.SamplingOptions(**sampling))  # type: ignore[arg-type]
            return await _stream_code(llm_pb2_grpc.LanguageModelStub(channel).Generate(
                request, timeout=300))
        return send

    return [Bomb("llm stop=['x'×5000]", generate("Hi", stop=["x" * 5000]), ("INVALID_ARGUMENT",)),
            Bomb("llm local 12,000 CJK characters", generate("中" * 12_000, max_tokens=4),
                 ("OK",))]


def orchestrator_bombs(megabytes: int) -> list[Bomb]:
    async def vad(channel: grpc.aio.Channel) -> str:
        config = pcm_config(server_vad=True, input_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.PCM_S16LE, sample_rate_hz=2_000_000_000, channels=8))
        session = Session(channel, config)
        chunk = bytes(1 << 20)
        try:
            for _ in range(megabytes):
                if session.call.done():
                    break
                await session.send(_audio(chunk))
            return await session.close(timeout_s=60)
        finally:
            session.cancel()

    return [Bomb(f"orchestrator server VAD 2e9 Hz × 8 ch, {megabytes} MiB", vad,
                 ("INVALID_ARGUMENT",))]


def _audio(data: bytes) -> voice_pb2.ConverseRequest:
    return voice_pb2.ConverseRequest(audio=data)


async def run_bombs(matrix: Matrix, address: str, pid: int, bombs: Sequence[Bomb],
                    good: Callable[[grpc.aio.Channel], Awaitable[object]], repeats: int,
                    bound_mb: float = 100.0) -> None:
    """Each bomb ``repeats`` times; RSS after a good request before and after it."""
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        await good(channel)
        for bomb in bombs:
            row = matrix.row("resources", bomb.name)
            before = procs.rss_mb(pid)
            for _ in range(repeats):
                code = await bomb.send(channel)
                row.record(code in bomb.accepted, code, f"{code} not in {list(bomb.accepted)}")
            await good(channel)
            row.memory_growth_mb = procs.rss_mb(pid) - before
            if row.memory_growth_mb > bound_mb:
                row.passed = 0
                row.failures.append(f"RSS grew {row.memory_growth_mb:.0f} MB > {bound_mb:g} MB")
            row.notes = f"accepted: {', '.join(bomb.accepted)}"
