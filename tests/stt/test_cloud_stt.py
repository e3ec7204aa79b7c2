"""``--engine groq``: Groq's hosted Whisper through the real ``groq`` SDK, here pointed at a local
stand-in of its transcription endpoint (``GROQ_BASE_URL``). The user gets Groq's transcript; when
Groq answers 500, never answers, or rejects the key, the local Whisper hears the words instead;
after repeated failures the circuit opens and Groq is not asked at all; the key is never logged."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from speech import PHRASE, english_speech_wav, words
from support import start_service

from voxline.common.breaker import CircuitBreaker
from voxline.common.config import ConfigError
from voxline.stt import cloud
from voxline.stt.cloud import CloudTranscriber
from voxline.stt.config import CloudSettings, EngineSettings, build_parser, parse
from voxline.stt.engine import AudioInput, RecognitionOptions, WhisperTranscriber
from voxline.v1 import stt_pb2, stt_pb2_grpc

KEY = "gsk_standinKEY0123456789abcdef"
PATH = "/openai/v1/audio/transcriptions"
CLOUD_TEXT = "Groq heard this from the stand-in."


@dataclass
class Reply:
    """How the stand-in answers one request."""

    status: int = 200
    text: str = CLOUD_TEXT
    #: never answer (the client must give up)
    hang: bool = False
    #: an error message; "{auth}" becomes the request's Authorization header (APIs echo keys)
    message: str = "internal error"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StandIn:
    """A stand-in of Groq's transcription endpoint on 127.0.0.1 (a real HTTP server, own thread)."""

    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    state = StandIn()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Request(self.path, dict(self.headers.items()), body))
            reply = state.replies.popleft() if state.replies else Reply()
            if reply.hang:
                state.release.wait(30)  # bounded: the test ends (and releases it) long before
                return
            if reply.status == 200:
                payload = {"text": " " + reply.text, "language": "English", "duration": 2.0,
                           "segments": [{"id": 0, "start": 0.0, "end": 2.0, "text": " " + reply.text}],
                           "x_groq": {"id": "req_standin"}}
            else:
                message = reply.message.replace("{auth}", self.headers.get("Authorization", ""))
                payload = {"error": {"message": message, "type": "server_error"}}
            data = json.dumps(payload).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def settings(stand_in: StandIn, **overrides: object) -> CloudSettings:
    values: dict[str, object] = {"engine": "groq", "base_url": stand_in.url, "api_key": KEY,
                                 "timeout_s": 5.0}
    return CloudSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def local(stt_cache_dir: Path) -> WhisperTranscriber:
    """The local fallback: the packaged Whisper base, warmed by the cloud engine's warm-up."""
    return WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en"))


async def transcribe(engine: CloudTranscriber) -> str:
    result = await engine.transcribe(AudioInput(english_speech_wav(PHRASE)), RecognitionOptions())
    return result.text


async def test_the_transcript_comes_from_groq(stand_in: StandIn, local: WhisperTranscriber) -> None:
    engine = CloudTranscriber(settings(stand_in), local, language="en")
    await engine.warm_up()
    try:
        result = await engine.transcribe(AudioInput(english_speech_wav(PHRASE)), RecognitionOptions())
    finally:
        await engine.close()
    assert result.text == CLOUD_TEXT
    assert result.language == "en" and result.segments[0].text == CLOUD_TEXT
    (request,) = stand_in.requests
    assert request.path == PATH
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert b'name="model"\r\n\r\nwhisper-large-v3-turbo' in request.body
    assert b'name="language"\r\n\r\nen' in request.body
    assert b"RIFF" in request.body and b"WAVE" in request.body  # the audio, as a WAV file
    assert (engine.cloud_count, engine.fallback_count) == (1, 0)


@pytest.mark.parametrize("reply", [Reply(status=500), Reply(hang=True), Reply(status=503)],
                         ids=["500", "timeout", "503"])
async def test_a_failing_groq_falls_back_to_local_whisper(
        reply: Reply, stand_in: StandIn, local: WhisperTranscriber,
        caplog: pytest.LogCaptureFixture) -> None:
    stand_in.replies.append(reply)
    engine = CloudTranscriber(settings(stand_in, timeout_s=1.0), local, language="en")
    await engine.warm_up()
    try:
        with caplog.at_level(logging.WARNING, logger=cloud.__name__):
            text = await transcribe(engine)
    finally:
        await engine.close()
    assert words(text) == words(PHRASE)  # the local model heard the user's words
    assert len(stand_in.requests) == 1  # asked once: the SDK's own retries are off
    (record,) = [r for r in caplog.records if r.name == cloud.__name__]
    reason = record.__dict__["reason"]
    assert ("no answer in 1 s" in reason) if reply.hang else (f"HTTP {reply.status}" in reason)


async def test_the_key_never_appears_in_logs_or_errors(stand_in: StandIn, local: WhisperTranscriber,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    stand_in.replies.append(Reply(status=401, message="Invalid API Key: {auth}"))
    engine = CloudTranscriber(settings(stand_in), local, language="en")
    await engine.warm_up()
    try:
        with caplog.at_level(logging.DEBUG):
            text = await transcribe(engine)
    finally:
        await engine.close()
    assert words(text) == words(PHRASE)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "HTTP 401" in logged and "Invalid API Key" in logged
    assert KEY not in logged and KEY[4:] not in logged
    assert KEY not in repr(settings(stand_in))


async def test_repeated_failures_open_the_circuit(stand_in: StandIn, local: WhisperTranscriber) -> None:
    stand_in.replies.extend([Reply(status=500)] * 2)
    engine = CloudTranscriber(settings(stand_in, failures=2, cooldown_s=600), local, language="en")
    await engine.warm_up()
    try:
        texts = [await transcribe(engine) for _ in range(3)]
    finally:
        await engine.close()
    assert all(words(t) == words(PHRASE) for t in texts)
    assert len(stand_in.requests) == 2  # the third went straight to the local model
    assert engine.breaker.state == "open" and engine.fallback_count == 3


def test_the_breaker_closes_after_a_successful_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.try_acquire()
    now[0] = 10.0
    assert breaker.try_acquire() and not breaker.try_acquire()  # one trial at a time
    breaker.record_success()
    assert breaker.state == "closed"


def test_flags_and_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    assert parse([]).cloud.engine == "local"
    usage = build_parser().format_help()
    for flag in ("--engine", "VOXLINE_STT_ENGINE", "--groq-model", "--groq-base-url", "GROQ_BASE_URL",
                 "--cloud-timeout-s", "--cloud-failures", "--cloud-cooldown-s", "--cloud-max-in-flight",
                 "GROQ_API_KEY"):
        assert flag in usage
    with pytest.raises(ConfigError, match="set GROQ_API_KEY"):
        parse(["--engine", "groq"])
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:9")
    config = parse(["--engine", "groq", "--cloud-timeout-s", "2"])
    assert (config.cloud.api_key, config.cloud.base_url, config.cloud.timeout_s) == \
        (KEY, "http://127.0.0.1:9", 2.0)
    assert KEY not in repr(config)
    with pytest.raises(SystemExit):
        parse(["--groq-api-key", KEY])  # no such flag: a key on a command line shows in ps


@pytest.mark.slow
def test_the_service_answers_with_groq_then_with_local_whisper_when_groq_fails(
        stand_in: StandIn, stt_cache_dir: Path) -> None:
    process = start_service("stt", ["--engine", "groq", "--language", "en", "--cache-dir",
                                    str(stt_cache_dir), "--cloud-timeout-s", "5"],
                            env={"GROQ_API_KEY": KEY, "GROQ_BASE_URL": stand_in.url})
    try:
        process.wait_serving()
        with grpc.insecure_channel(process.address) as channel:
            stub = stt_pb2_grpc.SpeechToTextStub(channel)
            request = stt_pb2.TranscribeRequest(audio=english_speech_wav(PHRASE))
            assert stub.Transcribe(request, timeout=60).text == CLOUD_TEXT
            stand_in.replies.append(Reply(status=500, message="down {auth}"))
            assert words(stub.Transcribe(request, timeout=60).text) == words(PHRASE)
    finally:
        assert process.stop() == 0, process.logs
    logs = process.logs
    assert "Groq transcription failed" in logs and "HTTP 500" in logs
    assert KEY not in logs
