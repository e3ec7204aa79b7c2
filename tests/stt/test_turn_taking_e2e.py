"""A spoken question with a 700 ms pause mid-sentence, through the whole turn-taking path: a client
paced like a microphone, the real orchestrator, the real STT servicer (Whisper base, Silero VAD,
Smart Turn) and fake LLM/TTS servers. One turn, the whole transcript, no reply before the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from speech import PAUSE_PHRASE, add_noise, silence, speech_with_pause, words

from voxline.cli.client import Conversation
from voxline.cli.realtime import last_voiced_s, microphone_schedule, run_paced
from voxline.common.audio import float_to_pcm16
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.wiring import build_spec
from voxline.stt.config import EngineSettings, TurnSettings
from voxline.stt.detectors import TurnDetectors
from voxline.stt.engine import WhisperTranscriber
from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
from voxline.testing.fake_servers import FakeLlm, FakeTts
from voxline.v1 import audio_pb2, stt_pb2_grpc, voice_pb2

pytestmark = pytest.mark.slow


@pytest.fixture
async def orchestrator(stt_cache_dir: Path) -> AsyncIterator[tuple[grpc.aio.Channel, FakeLlm, FakeTts]]:
    engine = WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en"))
    turns = TurnDetectors(TurnSettings())
    servicer = SpeechToTextServicer(engine, partial_interval_s=1.0, max_stream_bytes=1 << 24, turns=turns)

    async def warm_up() -> None:
        await engine.warm_up()
        await turns.warm_up()

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    stt: RunningServer = await start_server(
        ServiceSpec(name="stt", grpc_services=[SERVICE_NAME], register=register, warm_up=warm_up,
                    close=engine.close), ServerConfig(port=0))
    await stt.warm_up()
    llm = await FakeLlm(["Sure, ", "I will ", "call her. ", "Anything else?"], first_delay_s=0.2).start()
    tts = await FakeTts(first_audio_s=0.1).start()
    running = await start_server(build_spec(OrchestratorConfig(
        stt_address=f"127.0.0.1:{stt.port}", llm_address=llm.address, tts_address=tts.address)),
        ServerConfig(port=0))
    await running.warm_up()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel, llm, tts
    finally:
        await running.stop(0)
        await tts.stop()
        await llm.stop()
        await stt.stop(0)


async def test_a_paused_question_is_one_turn_answered_after_it_ends(
        orchestrator: tuple[grpc.aio.Channel, FakeLlm, FakeTts]) -> None:
    channel, llm, _ = orchestrator
    sentence, _ = speech_with_pause(pause_s=0.7)
    clean = np.concatenate([silence(0.4), sentence, silence(2.2)])
    pcm = float_to_pcm16(add_noise(clean, snr_db=25))
    config = voice_pb2.SessionConfig(
        input_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16_000, channels=1),
        language="en", server_vad=True,
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
    conversation = Conversation.on_channel(channel, read_timeout_s=60)
    run = await run_paced(conversation, config, microphone_schedule(pcm, 16_000),
                          last_voiced_s(float_to_pcm16(clean), 16_000), timeout_s=180)

    spoken = [t for t in run.turns if t.transcript]
    assert len(spoken) == 1, [t.transcript for t in run.turns]
    (turn,) = spoken
    assert words(turn.transcript) == words(PAUSE_PHRASE)
    assert run.early_replies == 0 and turn.first_audio_at is not None
    assert turn.reply == "Sure, I will call her. Anything else?" and turn.audio_bytes > 0
    # the LLM answered the whole question (a speculation on half of it may have been cancelled)
    assert words(llm.requests[-1].messages[-1].content) == words(PAUSE_PHRASE)
    m = turn.metrics
    assert m["status"] == voice_pb2.COMPLETED
    felt = run.end_of_speech_to_first_audio_ms
    assert felt is not None and felt > 0
    assert m["end_of_speech_to_first_audio_ms"] >= m["endpointing_ms"] > 0  # type: ignore[operator]
