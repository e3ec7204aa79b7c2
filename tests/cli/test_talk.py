"""`voxline talk` (the real command, a subprocess) against a fake orchestrator: an in-process
grpc.aio VoiceAssistant server that answers Converse with scripted events."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

RATE = 16000
REPLY = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE) * 32767).astype("<i2").tobytes()
METRICS = voice_pb2.TurnMetrics(
    stt_ms=31.5, llm_ttft_ms=120.25, llm_total_ms=410.0, tts_first_audio_ms=55.0,
    time_to_first_audio_ms=212.0, total_ms=650.0, trace_id="0af7651916cd43dd8448eb211c80319c",
    llm_provider="local", status=voice_pb2.COMPLETED, sentences=2, reply_audio_seconds=0.5,
    tts_total_ms=90.0)


@dataclass
class FakeAssistant(voice_pb2_grpc.VoiceAssistantServicer):
    """Records what the client sent; replies with a transcript, two text deltas, audio, metrics."""

    metrics: voice_pb2.TurnMetrics = field(default_factory=lambda: METRICS)
    abort: tuple[grpc.StatusCode, str] | None = None
    config: voice_pb2.SessionConfig | None = None
    audio: bytearray = field(default_factory=bytearray)
    texts: list[str] = field(default_factory=list)

    async def Converse(self, request_iterator: AsyncIterator[voice_pb2.ConverseRequest],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[voice_pb2.ConverseResponse]:
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "config":
                self.config = request.config
            elif kind == "audio":
                self.audio.extend(request.audio)
            elif kind in ("end_of_utterance", "text"):
                if kind == "text":
                    self.texts.append(request.text)
                if self.abort is not None:
                    await context.abort(*self.abort)
                heard = request.text if kind == "text" else f"{len(self.audio)} bytes heard"
                yield voice_pb2.ConverseResponse(turn=1, transcript=voice_pb2.Transcript(text=heard,
                                                                                         language="en"))
                for delta in ("Paris is ", "the capital."):
                    text = voice_pb2.AssistantText(delta=delta)
                    yield voice_pb2.ConverseResponse(turn=1, assistant_text=text)
                yield voice_pb2.ConverseResponse(turn=1, audio_format=audio_pb2.AudioFormat(
                    encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE, channels=1))
                for start in range(0, len(REPLY), 4001):  # odd sizes: chunks need not align to samples
                    yield voice_pb2.ConverseResponse(turn=1, audio=REPLY[start:start + 4001])
                yield voice_pb2.ConverseResponse(turn=1, metrics=self.metrics)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAssistant, str]]:
    assistant = FakeAssistant()
    server = grpc.aio.server()
    voice_pb2_grpc.add_VoiceAssistantServicer_to_server(assistant, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield assistant, f"127.0.0.1:{port}"
    await server.stop(0)


async def voxline(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxline.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def question_wav(tmp_path: Path) -> Path:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.zeros(RATE * 3, dtype="<i2").tobytes())  # 3 s: several 32 KiB chunks
    path = tmp_path / "question.wav"
    path.write_bytes(buffer.getvalue())
    return path


async def test_sends_the_file_and_writes_the_spoken_reply(fake: tuple[FakeAssistant, str],
                                                          tmp_path: Path) -> None:
    assistant, address = fake
    question = question_wav(tmp_path)
    reply = tmp_path / "reply.wav"
    code, out, err = await voxline("talk", str(question), "-o", str(reply), "--address", address,
                                   "--language", "en", "--voice", "piper:joe",
                                   "--llm-providers", "local,groq")
    assert code == 0, err
    assert bytes(assistant.audio) == question.read_bytes()  # the file as is, the STT decodes it
    assert assistant.config is not None
    assert assistant.config.output_format.encoding == audio_pb2.PCM_S16LE
    assert assistant.config.input_format.encoding == audio_pb2.AUDIO_ENCODING_UNSPECIFIED
    assert (assistant.config.language, assistant.config.voice) == ("en", "piper:joe")
    assert list(assistant.config.llm_providers) == ["local", "groq"]
    assert f"you:       {len(question.read_bytes())} bytes heard" in out
    assert "assistant: Paris is the capital.\n" in out
    assert "time to first audio                  212.0 ms" in out
    assert "LLM time to first token              120.2 ms" in out
    assert "trace id                          0af7651916cd43dd8448eb211c80319c" in out
    assert f"reply audio: {reply} (0.50 s, 16000 Hz)" in out
    with wave.open(str(reply)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        assert w.readframes(w.getnframes()) == REPLY


async def test_a_typed_question_and_raw_pcm_input(fake: tuple[FakeAssistant, str], tmp_path: Path) -> None:
    assistant, address = fake
    assistant.metrics = voice_pb2.TurnMetrics(
        llm_ttft_ms=120.25, llm_total_ms=410.0, tts_first_audio_ms=55.0, time_to_first_audio_ms=180.0,
        total_ms=600.0, status=voice_pb2.COMPLETED)  # a typed turn: no STT figure
    code, out, err = await voxline("talk", "--text", "What is the capital of France?",
                                   "-o", str(tmp_path / "r.wav"), "--address", address)
    assert code == 0, err
    assert assistant.texts == ["What is the capital of France?"]
    assert "you:       What is the capital of France?" in out
    assert re.search(r"STT \(end of speech -> transcript\) +n/a \(typed question\)\n", out)
    assert "time to first audio                  180.0 ms" in out

    raw = tmp_path / "question.pcm"
    raw.write_bytes(np.zeros(8000, dtype="<i2").tobytes())
    code, _, err = await voxline("talk", str(raw), "--rate", "8000", "-o", str(tmp_path / "r2.wav"),
                                 "--address", address)
    assert code == 0, err
    assert assistant.config is not None
    fmt = assistant.config.input_format
    assert (fmt.encoding, fmt.sample_rate_hz, fmt.channels) == (audio_pb2.PCM_S16LE, 8000, 1)


async def test_a_failed_turn_and_a_stream_error_exit_non_zero(fake: tuple[FakeAssistant, str],
                                                              tmp_path: Path) -> None:
    assistant, address = fake
    # A stage ran (STT), then the LLM failed: the table shows what ran, n/a for the rest.
    assistant.metrics = voice_pb2.TurnMetrics(status=voice_pb2.FAILED, error="llm: UNAVAILABLE",
                                              stt_ms=25.0, total_ms=40.0)
    code, out, err = await voxline("talk", str(question_wav(tmp_path)), "-o", str(tmp_path / "r.wav"),
                                   "--address", address)
    assert code == 1
    assert "the turn failed: llm: UNAVAILABLE" in err
    assert "status                            FAILED" in out
    assert re.search(r"STT \(end of speech -> transcript\) +25\.0 ms\n", out)
    assert re.search(r"LLM time to first token +n/a\n", out)
    assert " 0.0 ms" not in out

    # Refused before any stage ran (say, a file that is not audio): the error alone, no table.
    assistant.metrics = voice_pb2.TurnMetrics(
        status=voice_pb2.FAILED, total_ms=3.0, trace_id="ab" * 16,
        error="INVALID_ARGUMENT: stt stage failed: cannot decode the audio")
    code, out, err = await voxline("talk", "--text", "hi", "-o", str(tmp_path / "r.wav"),
                                   "--address", address)
    assert code == 1
    assert err.strip() == ("voxline talk: the turn failed: INVALID_ARGUMENT: stt stage failed: cannot "
                           f"decode the audio (trace {'ab' * 16})")
    assert "turn metrics" not in out and "reply audio" not in out

    assistant.abort = (grpc.StatusCode.INVALID_ARGUMENT, "unknown voice 'x'")
    code, _, err = await voxline("talk", "--text", "hi", "-o", str(tmp_path / "r.wav"),
                                 "--address", address)
    assert code == 1
    assert "voxline talk: INVALID_ARGUMENT: unknown voice 'x'" in err


async def test_nothing_listening_says_to_run_voxline_up(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = await voxline("talk", "--text", "hi", "--address", f"127.0.0.1:{port}",
                                 "-o", str(tmp_path / "r.wav"))
    assert code == 1
    assert f"cannot connect to the orchestrator at 127.0.0.1:{port}" in err
    assert "is `voxline up` running?" in err
    assert not (tmp_path / "r.wav").exists()


async def test_usage_errors(tmp_path: Path) -> None:
    code, _, err = await voxline("talk", str(tmp_path / "missing.wav"))
    assert code == 2
    assert f"no such file: {tmp_path / 'missing.wav'}" in err
    code, _, err = await voxline("talk")
    assert code == 2
    assert "give an audio file or --text" in err


async def test_a_stage_port_gets_a_hint_not_a_bare_unimplemented(tmp_path: Path) -> None:
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.aio.server()  # a server without VoiceAssistant, as a stage's port is
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        code, _, err = await voxline("talk", "--text", "hi", "--address", f"127.0.0.1:{port}",
                                     "-o", str(tmp_path / "r.wav"))
    finally:
        await server.stop(0)
    assert code == 1
    assert f"127.0.0.1:{port} does not serve voxline.v1.VoiceAssistant (UNIMPLEMENTED" in err
    assert "is it a stage's port?" in err and "127.0.0.1:50050" in err
