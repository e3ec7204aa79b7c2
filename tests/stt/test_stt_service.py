"""The STT service as users run it: ``python -m voxline.stt`` as a subprocess with the packaged
Whisper base, real English speech (Piper), real status codes. One server for the whole module."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from speech import PHRASE, PHRASE_2, english_speech_pcm16, english_speech_wav, speech_seconds, words
from support import start_service

from voxline.cli.service_process import ServiceProcess
from voxline.common.audio import to_wav_bytes
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

pytestmark = pytest.mark.slow

RATE = 16_000
MAX_AUDIO_SECONDS = 30
MAX_STREAM_BYTES = 1024 * 1024
TIMEOUT = 120


@dataclass
class Server:
    process: ServiceProcess
    channel: grpc.Channel
    stub: stt_pb2_grpc.SpeechToTextStub
    #: health of "" and of the service, checked as soon as the port was logged
    health_at_start: tuple[int, int]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cache = tmp_path_factory.mktemp("voxline-cache")  # empty: the first start assembles the model
    process = start_service("stt", [
        "--cache-dir", str(cache), "--num-workers", "1", "--max-queued", "1",
        "--max-audio-seconds", str(MAX_AUDIO_SECONDS), "--max-message-mb", "2",
        "--max-stream-bytes", str(MAX_STREAM_BYTES),
    ])
    try:
        # assembling, loading and warming the model takes seconds: still NOT_SERVING here
        at_start = (process.health(), process.health("voxline.v1.SpeechToText"))
        process.wait_serving()
        channel = grpc.insecure_channel(process.address)
        yield Server(process, channel, stt_pb2_grpc.SpeechToTextStub(channel), at_start)
        channel.close()
    finally:
        assert process.stop() == 0, process.logs


def pcm_format(rate: int = RATE) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=1)


def english(**fields: object) -> stt_pb2.RecognitionConfig:
    """A config naming English (skips language detection: half the CPU time)."""
    return stt_pb2.RecognitionConfig(language="en", **fields)  # type: ignore[arg-type]


def test_health_is_not_serving_until_warm_then_serving(server: Server) -> None:
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.health_at_start == (not_serving, not_serving)
    assert server.process.health() == health_pb2.HealthCheckResponse.SERVING
    assert server.process.health("voxline.v1.SpeechToText") == health_pb2.HealthCheckResponse.SERVING
    logs = server.process.logs
    assert "assembling the packaged Whisper base model" in logs
    assert logs.index("listening") < logs.index("model warm") < logs.index("serving")


def test_reflection_lists_the_speech_to_text_service(server: Server) -> None:
    services = ProtoReflectionDescriptorDatabase(server.channel).get_services()
    assert "voxline.v1.SpeechToText" in services
    assert "grpc.health.v1.Health" in services


def test_transcribe_wav_detects_english_and_returns_the_words(server: Server) -> None:
    reply = server.stub.Transcribe(stt_pb2.TranscribeRequest(audio=english_speech_wav(PHRASE)),
                                   timeout=TIMEOUT)
    assert words(reply.text) == words(PHRASE)
    assert reply.language == "en" and reply.language_probability > 0.5
    assert reply.audio_seconds == pytest.approx(speech_seconds(PHRASE), abs=0.01)
    assert words(" ".join(s.text for s in reply.segments)) == words(PHRASE)
    assert 0 <= reply.segments[0].start_s < reply.segments[-1].end_s <= reply.audio_seconds + 0.5
    assert 0 < reply.decode_ms < reply.processing_ms


def test_transcribe_raw_pcm(server: Server) -> None:
    config = stt_pb2.RecognitionConfig(language="en-US", format=pcm_format())  # region ignored
    request = stt_pb2.TranscribeRequest(audio=english_speech_pcm16(PHRASE_2, RATE), config=config)
    reply = server.stub.Transcribe(request, timeout=TIMEOUT)
    assert words(reply.text) == words(PHRASE_2)
    assert reply.language == "en" and reply.language_probability == 1.0


def test_streaming_pcm_gives_partials_then_the_final(server: Server) -> None:
    pcm = english_speech_pcm16(PHRASE, RATE)
    chunk = RATE // 10 * 2  # 100 ms

    def requests() -> Iterator[stt_pb2.StreamingTranscribeRequest]:
        yield stt_pb2.StreamingTranscribeRequest(config=english(format=pcm_format(), partial_interval_s=1.0))
        for start in range(0, len(pcm), chunk):
            yield stt_pb2.StreamingTranscribeRequest(audio=pcm[start:start + chunk])

    replies = list(server.stub.StreamingTranscribe(requests(), timeout=TIMEOUT))
    assert len(replies) >= 2
    assert [r.is_final for r in replies] == [False] * (len(replies) - 1) + [True]
    final = replies[-1].result
    assert words(final.text) == words(PHRASE)
    assert final.audio_seconds == pytest.approx(len(pcm) / 2 / RATE, abs=1e-3)
    assert all(1.0 <= r.result.audio_seconds < final.audio_seconds for r in replies[:-1])


def test_streaming_wav_chunks_give_one_final(server: Server) -> None:
    wav = english_speech_wav(PHRASE_2)

    def requests() -> Iterator[stt_pb2.StreamingTranscribeRequest]:
        yield stt_pb2.StreamingTranscribeRequest(config=english())  # encoding unset: sniffed
        for start in range(0, len(wav), 4096):
            yield stt_pb2.StreamingTranscribeRequest(audio=wav[start:start + 4096])

    replies = list(server.stub.StreamingTranscribe(requests(), timeout=TIMEOUT))
    assert [r.is_final for r in replies] == [True]
    assert words(replies[0].result.text) == words(PHRASE_2)


def _wav() -> bytes:
    return english_speech_wav(PHRASE)  # built at test time (cached), not at import


INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
BAD_REQUESTS = {
    "empty audio": (lambda: stt_pb2.TranscribeRequest(audio=b""), INVALID, "empty"),
    "not audio": (lambda: stt_pb2.TranscribeRequest(audio=b"hello, this is text" * 50), INVALID,
                  "unrecognised audio"),
    "truncated wav": (lambda: stt_pb2.TranscribeRequest(audio=_wav()[: len(_wav()) // 2]), INVALID,
                      "truncated WAV"),
    "ogg_opus that is not": (lambda: stt_pb2.TranscribeRequest(
        audio=b"\x00\x01" * 500, config=stt_pb2.RecognitionConfig(
            format=audio_pb2.AudioFormat(encoding=audio_pb2.OGG_OPUS))), INVALID, "ogg_opus"),
    "wav declared as flac": (lambda: stt_pb2.TranscribeRequest(
        audio=_wav(), config=stt_pb2.RecognitionConfig(
            format=audio_pb2.AudioFormat(encoding=audio_pb2.FLAC))), INVALID, "looks like wav"),
    "ffconcat script declared as flac (would read a server file)": (lambda: stt_pb2.TranscribeRequest(
        audio=b"ffconcat version 1.0\nfile secret_note.wav\n", config=stt_pb2.RecognitionConfig(
            format=audio_pb2.AudioFormat(encoding=audio_pb2.FLAC))), INVALID, "not flac"),
    "encoding out of range": (lambda: stt_pb2.TranscribeRequest(
        audio=_wav(), config=stt_pb2.RecognitionConfig(format=audio_pb2.AudioFormat(encoding=42))),
        INVALID, "unsupported audio encoding 42"),
    "pcm without rate": (lambda: stt_pb2.TranscribeRequest(
        audio=bytes(3200), config=stt_pb2.RecognitionConfig(
            format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))), INVALID, "sample_rate_hz"),
    "pcm odd length": (lambda: stt_pb2.TranscribeRequest(
        audio=bytes(3201), config=stt_pb2.RecognitionConfig(format=pcm_format())), INVALID, "whole number"),
    "unknown language": (lambda: stt_pb2.TranscribeRequest(
        audio=_wav(), config=stt_pb2.RecognitionConfig(language="klingon")), INVALID, "language"),
    "a 10 KB language (the error quotes 60 characters of it)": (lambda: stt_pb2.TranscribeRequest(
        audio=_wav(), config=stt_pb2.RecognitionConfig(language="x" * 10_000)), INVALID,
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…(10002 chars)"),
    "beam too large": (lambda: stt_pb2.TranscribeRequest(
        audio=_wav(), config=stt_pb2.RecognitionConfig(beam_size=99)), INVALID, "beam_size"),
    "audio too long": (lambda: stt_pb2.TranscribeRequest(
        audio=to_wav_bytes(np.zeros(RATE * (MAX_AUDIO_SECONDS + 1), np.float32), RATE)),
        EXHAUSTED, f"limit is {MAX_AUDIO_SECONDS} s"),
    "payload over message limit": (lambda: stt_pb2.TranscribeRequest(audio=bytes(3 * 1024 * 1024)),
                                   EXHAUSTED, "larger than max"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_transcribe_request_gets_a_clear_status(server: Server, name: str) -> None:
    build, code, message = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Transcribe(build(), timeout=TIMEOUT)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()


def _config(**fields: object) -> stt_pb2.StreamingTranscribeRequest:
    return stt_pb2.StreamingTranscribeRequest(config=stt_pb2.RecognitionConfig(**fields))  # type: ignore[arg-type]


def _audio(data: bytes) -> stt_pb2.StreamingTranscribeRequest:
    return stt_pb2.StreamingTranscribeRequest(audio=data)


BAD_STREAMS = {
    "no messages": (lambda: [], INVALID, "first message must be config"),
    "audio before config": (lambda: [_audio(_wav()), _config()], INVALID, "first message must be config"),
    "config twice": (lambda: [_config(), _audio(_wav()[:4096]), _config()], INVALID, "config sent twice"),
    "config but no audio": (lambda: [_config()], INVALID, "empty"),
    "unknown language": (lambda: [_config(language="xx-nope"), _audio(_wav())], INVALID, "language"),
    "pcm without rate": (lambda: [_config(format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE)),
                                  _audio(bytes(3200))], INVALID, "sample_rate_hz"),
    "truncated wav": (lambda: [_config(), _audio(_wav()[:20_000])], INVALID, "truncated WAV"),
    "more bytes than allowed": (lambda: [_config(format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV))]
                                + [_audio(bytes(400_000))] * 3, EXHAUSTED, f"{MAX_STREAM_BYTES} bytes"),
    "pcm longer than allowed": (lambda: [_config(format=pcm_format(), partial_interval_s=-1)]
                                + [_audio(bytes(2 * RATE))] * (MAX_AUDIO_SECONDS + 1),
                                EXHAUSTED, f"longer than {MAX_AUDIO_SECONDS} s"),
}


@pytest.mark.parametrize("name", list(BAD_STREAMS))
def test_bad_stream_gets_a_clear_status(server: Server, name: str) -> None:
    build, code, message = BAD_STREAMS[name]
    with pytest.raises(grpc.RpcError) as info:
        list(server.stub.StreamingTranscribe(iter(build()), timeout=TIMEOUT))
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()


def test_full_queue_gets_resource_exhausted_and_admitted_calls_finish(server: Server) -> None:
    # the server runs 1 transcription and queues 1; 4 calls at once must overflow
    request = stt_pb2.TranscribeRequest(audio=english_speech_wav(PHRASE), config=english())
    calls: list[Future[stt_pb2.TranscribeResponse]] = [
        server.stub.Transcribe.future(request, timeout=TIMEOUT) for _ in range(4)
    ]
    ok, exhausted = [], []
    for call in calls:
        try:
            ok.append(call.result())
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert "server busy" in exc.details()
            exhausted.append(exc)
    assert exhausted and ok
    assert all(words(reply.text) == words(PHRASE) for reply in ok)


def test_still_serving_after_all_that(server: Server) -> None:
    assert server.process.health() == health_pb2.HealthCheckResponse.SERVING
    request = stt_pb2.TranscribeRequest(audio=english_speech_wav(PHRASE_2), config=english())
    assert words(server.stub.Transcribe(request, timeout=TIMEOUT).text) == words(PHRASE_2)
    assert server.process.proc.poll() is None
    assert "Traceback" not in server.process.logs

