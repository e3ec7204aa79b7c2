"""End to end: the four real services as separate processes, real speech in, spoken reply out.

One stack for the module (STT: packaged Whisper base; LLM: the local SmolLM2 provider only, no API
keys; TTS: espeak-ng; the orchestrator pointed at them), every process writing spans to one
VOXLINE_SPAN_FILE. The conversation (a spoken turn, then a typed one on the same stream) runs once;
then the stack is stopped (SIGTERM: graceful, spans flushed) and the tests check what came back
and what was traced.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from speech import PHRASE, english_speech_wav, words
from support import start_service

from voxline.common.audio import read_streamed_wav
from voxline.v1 import audio_pb2, llm_pb2, voice_pb2, voice_pb2_grpc

pytestmark = pytest.mark.slow

SERVICES = {"voxline-stt", "voxline-llm", "voxline-tts", "voxline-orchestrator"}
STAGE_METHODS = {"stt": "/voxline.v1.SpeechToText/Transcribe",
                 "llm": "/voxline.v1.LanguageModel/Generate",
                 "tts": "/voxline.v1.TextToSpeech/Synthesize"}


@dataclass
class Outcome:
    turns: list[list[voice_pb2.ConverseResponse]]
    spans: list[dict]
    exit_codes: dict[str, int]
    logs: str


async def _converse(address: str) -> list[list[voice_pb2.ConverseResponse]]:
    wav = english_speech_wav(PHRASE)
    async with grpc.aio.insecure_channel(address) as channel:
        call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()
        await call.write(voice_pb2.ConverseRequest(config=voice_pb2.SessionConfig(
            input_format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV), language="en",
            voice="espeak:en", output_format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV),
            sampling=llm_pb2.SamplingOptions(max_tokens=24, temperature=0.0), no_cache=True)))
        turns = []
        for request in ("speech", "Thank you. Say goodbye."):
            if request == "speech":
                for i in range(0, len(wav), 8192):  # chunks as a client streams them
                    await call.write(voice_pb2.ConverseRequest(audio=wav[i:i + 8192]))
                await call.write(voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))
            else:
                await call.write(voice_pb2.ConverseRequest(text=request))
            events = []
            while not events or not events[-1].HasField("metrics"):
                event = await asyncio.wait_for(call.read(), 120)
                assert event is not grpc.aio.EOF
                events.append(event)
            turns.append(events)
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    return turns


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    span_file = tmp_path_factory.mktemp("spans") / "spans.jsonl"
    # One environment for all four, as under `voxline up`: OTEL_SERVICE_NAME names the deployment
    # (service.namespace); every service keeps its own service.name.
    env = {"VOXLINE_SPAN_FILE": str(span_file), "OTEL_TRACES_EXPORTER": "none",
           "OTEL_SERVICE_NAME": "myvoice", "GROQ_API_KEY": "", "CEREBRAS_API_KEY": ""}
    # all four start at once: the engines' model loads overlap, and the orchestrator needs only
    # their ports (logged before loading), not the engines being up
    engines = {
        "stt": start_service("stt", [], env),
        "llm": start_service("llm", ["--providers", "local"], env),
        "tts": start_service("tts", [], env),
    }
    procs = dict(engines)
    try:
        procs["orchestrator"] = orch = start_service("orchestrator", [
            "--stt", engines["stt"].address, "--llm", engines["llm"].address,
            "--tts", engines["tts"].address, "--llm-first-token-deadline", "60",
            "--llm-deadline", "120", "--stt-deadline", "60"], env)
        for proc in procs.values():
            proc.wait_serving(240)
        turns = asyncio.run(_converse(orch.address))
    finally:
        exit_codes = {name: proc.stop() for name, proc in procs.items()}
    logs = "\n".join(f"--- {name}\n{proc.logs}" for name, proc in procs.items())
    spans = [json.loads(line) for line in Path(span_file).read_text().splitlines()]
    return Outcome(turns, spans, exit_codes, logs)


def _metrics(events: list[voice_pb2.ConverseResponse]) -> voice_pb2.TurnMetrics:
    return events[-1].metrics


def test_spoken_turn_transcript_reply_and_metrics(outcome: Outcome) -> None:
    events = outcome.turns[0]
    kinds = [e.WhichOneof("event") for e in events]
    m = _metrics(events)
    assert m.status == voice_pb2.COMPLETED, f"{m.error}\n{outcome.logs[-4000:]}"
    assert kinds[0] == "transcript" and kinds[-1] == "metrics"
    assert words(events[0].transcript.text) == words(PHRASE)
    assert events[0].transcript.language == "en"
    reply = "".join(e.assistant_text.delta for e in events if e.HasField("assistant_text"))
    assert reply.strip()
    assert kinds.index("audio_format") < kinds.index("audio")
    fmt = events[kinds.index("audio_format")].audio_format
    assert fmt.encoding == audio_pb2.WAV and fmt.channels == 1 and fmt.sample_rate_hz > 0
    audio = b"".join(e.audio for e in events if e.WhichOneof("event") == "audio")
    rate, samples = read_streamed_wav(audio)
    assert rate == fmt.sample_rate_hz
    assert len(samples) / rate > 0.3 and np.abs(samples.astype(np.float32)).mean() > 50
    assert abs(len(samples) / rate - m.reply_audio_seconds) < 0.05
    assert len(m.trace_id) == 32 and int(m.trace_id, 16)
    assert m.stt_ms > 0 and m.llm_ttft_ms > 0 and m.llm_total_ms >= m.llm_ttft_ms
    assert 0 < m.tts_first_audio_ms and m.sentences >= 1 and m.llm_provider == "local"
    assert m.stt_ms < m.time_to_first_audio_ms <= m.total_ms


def test_typed_second_turn_on_the_same_stream(outcome: Outcome) -> None:
    events = outcome.turns[1]
    m = _metrics(events)
    assert events[-1].turn == 2 and m.status == voice_pb2.COMPLETED, m.error
    assert any(e.WhichOneof("event") == "audio" for e in events)
    assert m.trace_id != _metrics(outcome.turns[0]).trace_id


def test_one_trace_across_all_four_processes(outcome: Outcome) -> None:
    for turn in outcome.turns:
        trace_id = _metrics(turn).trace_id
        spans = [s for s in outcome.spans if s["trace_id"] == trace_id]
        spoken = turn is outcome.turns[0]
        expected = SERVICES if spoken else SERVICES - {"voxline-stt"}  # typed input: no STT
        assert {s["service"] for s in spans} == expected, outcome.logs[-4000:]
        by_id = {s["span_id"]: s for s in spans}
        (root,) = [s for s in spans if s["name"] == "voxline.turn"]
        assert root["parent_span_id"] is None and root["service"] == "voxline-orchestrator"
        assert root["attributes"]["voxline.turn.status"] == "completed"
        # every other span hangs off the turn: no orphan, no second root
        assert [s["name"] for s in spans if s["parent_span_id"] is None] == ["voxline.turn"]
        assert all(s["parent_span_id"] in by_id for s in spans if s is not root)
        for stage, method in STAGE_METHODS.items():
            stage_spans = [s for s in spans if s["name"] == stage]
            if stage == "stt" and not spoken:
                assert not stage_spans
                continue
            assert stage_spans, stage
            for stage_span in stage_spans:
                assert stage_span["parent_span_id"] == root["span_id"]
                (client,) = [s for s in spans if s["parent_span_id"] == stage_span["span_id"]
                             and s["kind"] == "CLIENT"]
                assert client["name"] == method and client["service"] == "voxline-orchestrator"
                (server,) = [s for s in spans if s["parent_span_id"] == client["span_id"]
                             and s["kind"] == "SERVER"]
                assert server["service"] == f"voxline-{stage}" and server["name"] == method
        llm = next(s for s in spans if s["name"] == "llm")["attributes"]
        assert llm["gen_ai.operation.name"] == "chat" and llm["gen_ai.provider.name"] == "local"
        assert llm["gen_ai.usage.output_tokens"] > 0
        tts = [s["attributes"] for s in spans if s["name"] == "tts"]
        assert sorted(a["voxline.sentence.index"] for a in tts) == list(range(len(tts)))
        # What a trace viewer (Arize Phoenix) reads: a kind and the service on every span, the
        # milestones as events.
        assert all(s["attributes"]["openinference.span.kind"] in ("CHAIN", "LLM", "TOOL") for s in spans)
        assert {s["attributes"]["service.name"] for s in spans} == expected
        llm_span = next(s for s in spans if s["name"] == "llm")
        assert llm_span["attributes"]["openinference.span.kind"] == "LLM"
        assert [e["name"] for e in llm_span["events"]] == ["first_token", "first_clause_to_tts"]
        assert [e["name"] for e in root["events"]] == ["first_audio_sent"]


def test_services_stop_cleanly(outcome: Outcome) -> None:
    assert outcome.exit_codes == dict.fromkeys(("stt", "llm", "tts", "orchestrator"), 0), outcome.logs[-4000:]
