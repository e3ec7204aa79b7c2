"""The microphone-paced client (``voxline talk --realtime``, the turn-taking bench) against the real
orchestrator and the fake stages: 20 ms chunks at real-time pace, server VAD, the felt latency."""

from __future__ import annotations

import grpc
import pytest
from orchestrator_harness import PCM16K, converse, start_orchestrator

from voxline.cli.client import Conversation
from voxline.cli.realtime import (
    SessionUnfinished,
    chunks_of,
    describe_run,
    last_voiced_s,
    microphone_schedule,
    run_paced,
)
from voxline.orchestrator.config import Deadlines
from voxline.testing.fake_listen import ListenScript
from voxline.testing.fake_servers import FakeStack, silence_pcm, tone_pcm
from voxline.v1 import audio_pb2, voice_pb2


def test_the_schedule_is_20_ms_chunks_and_the_end_of_speech_is_the_last_voiced_frame() -> None:
    pcm = silence_pcm(0.2) + tone_pcm(0.5) + silence_pcm(0.31)
    ticks = microphone_schedule(pcm, 16_000)
    assert len(ticks) == len(chunks_of(pcm, 16_000)) == 51
    assert [len(t[0].audio) for t in ticks[:50]] == [640] * 50 and len(ticks[50][0].audio) == 320
    assert last_voiced_s(pcm, 16_000) == pytest.approx(0.7, abs=0.011)
    assert last_voiced_s(silence_pcm(0.5), 16_000) == 0.0


async def test_a_paced_session_reports_the_felt_latency(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.stt.listen_script = ListenScript(segments=["Hello there."])
    pcm = silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.8)
    config = voice_pb2.SessionConfig(input_format=PCM16K, server_vad=True,
                                     output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
    run = await run_paced(converse(channel), config, microphone_schedule(pcm, 16_000),
                          last_voiced_s(pcm, 16_000))
    (turn,) = run.turns
    assert turn.transcript == "Hello there." and turn.audio_bytes > 0
    assert run.interims == ["Hello there."] and run.early_replies == 0
    felt = run.end_of_speech_to_first_audio_ms
    assert felt is not None and felt >= 200  # at least the 200 ms of silence that ended the turn
    server_felt = turn.metrics["end_of_speech_to_first_audio_ms"]
    assert isinstance(server_felt, float) and server_felt >= turn.metrics["endpointing_ms"]  # type: ignore[operator]


async def test_a_paced_session_waits_for_a_slow_recogniser(fakes: FakeStack) -> None:
    """A CPU Whisper pass can take 10 s: the client waits while the server works (it used to give up
    10 s after its last chunk and blame the whole session's timeout)."""
    fakes.stt.listen_script = ListenScript(segments=["Hello there."], final_delay_s=10.5)
    pcm = silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.3)
    config = voice_pb2.SessionConfig(input_format=PCM16K, server_vad=True,
                                     output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
    # the STT deadline of a real orchestrator (15 s), not the harness's 5 s
    server = await start_orchestrator(fakes.stt.address, fakes.llm.address, fakes.tts.address,
                                      deadlines=Deadlines(stt_s=15, llm_ttft_s=5, llm_total_s=10,
                                                          tts_s=5, control_s=2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            run = await run_paced(Conversation.on_channel(channel, read_timeout_s=60), config,
                                  microphone_schedule(pcm, 16_000), last_voiced_s(pcm, 16_000))
    finally:
        await server.stop(0)
    (turn,) = run.turns
    assert turn.transcript == "Hello there." and turn.audio_bytes > 0
    # the recogniser's 10.5 s is recognition, not endpointing (the silence waited)
    assert turn.metrics["stt_ms"] >= 10_000  # type: ignore[operator]
    assert turn.metrics["endpointing_ms"] < 2_000  # type: ignore[operator]


async def test_a_session_past_its_time_names_what_it_waited_for(channel: grpc.aio.Channel,
                                                                fakes: FakeStack) -> None:
    fakes.stt.listen_script = ListenScript(segments=["Hello there."], transcript_before_judgement=True,
                                           final_delay_s=30.0)
    pcm = silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.6)
    config = voice_pb2.SessionConfig(input_format=PCM16K, server_vad=True,
                                     output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
    with pytest.raises(SessionUnfinished, match="still recognising") as failed:
        await run_paced(converse(channel), config, microphone_schedule(pcm, 16_000),
                        last_voiced_s(pcm, 16_000), timeout_s=3.0)
    assert failed.value.run.interims == ["Hello there."]  # the partial transcript is kept
    assert "heard so far (interim): 'Hello there.'" in describe_run(failed.value.run)
