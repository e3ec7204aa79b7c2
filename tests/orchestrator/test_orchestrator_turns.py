"""Converse turns against fake stages: event order, pipelining, history, audio formats, VAD."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from orchestrator_harness import PCM16K, converse, read_turn, read_until, settings

from voxline.common.audio import read_streamed_wav
from voxline.orchestrator.config import DEFAULT_SYSTEM_PROMPT
from voxline.testing.fake_servers import FakeStack, silence_pcm, tone_pcm
from voxline.v1 import audio_pb2, voice_pb2

EXPECTED_ORDER = ["transcript", "assistant_text", "audio_format", "audio", "metrics"]


def _order_ok(kinds: list[str]) -> bool:
    """transcript first, audio_format before any audio, metrics last; text may interleave with audio."""
    return (kinds[0] == "transcript" and kinds[-1] == "metrics" and "audio" in kinds
            and kinds.index("audio_format") < kinds.index("audio") and kinds.count("audio_format") == 1
            and kinds.index("assistant_text") < kinds.index("audio_format"))


async def test_text_turn_events_in_order(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_text("What time is it?")
    turn = await read_turn(conv)

    assert _order_ok(turn.kinds), turn.kinds
    assert turn.number == 1
    assert turn.transcript == "What time is it?"
    assert turn.text == "Hello there. How can I help?"
    m = turn.metrics
    assert m.status == voice_pb2.COMPLETED, m.error
    assert m.sentences == 2
    assert fakes.tts.texts == ["Hello there.", "How can I help?"]
    assert len(m.trace_id) == 32 and int(m.trace_id, 16) != 0
    assert m.llm_provider == "fake" and not m.cache_hit
    assert m.stt_ms == 0  # typed input: no STT
    assert 0 < m.time_to_first_audio_ms <= m.total_ms
    assert m.llm_ttft_ms > 0 and m.llm_total_ms >= m.llm_ttft_ms and m.tts_first_audio_ms > 0
    # 2 sentences of fake speech: 5 ms per character at 16 kHz, 16-bit mono
    expected_seconds = len("Hello there.How can I help?") * 0.005
    assert abs(m.reply_audio_seconds - expected_seconds) < 0.01
    assert abs(len(turn.audio) / 32000 - expected_seconds) < 0.01
    assert fakes.stt.log.calls == 0
    await conv.call.done_writing()
    assert await conv.call.read() is grpc.aio.EOF
    assert await conv.call.code() == grpc.StatusCode.OK


async def test_audio_turn_sends_accumulated_audio_to_stt(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    speech = tone_pcm(0.5)
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K, language="en"))
    await conv.send_audio(speech)
    await conv.send_end_of_utterance()
    turn = await read_turn(conv)

    assert _order_ok(turn.kinds), turn.kinds
    assert turn.transcript == fakes.stt.transcript
    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    assert turn.metrics.stt_ms > 0
    request = fakes.stt.requests[0]
    assert request.audio == speech
    assert request.config.format.encoding == audio_pb2.PCM_S16LE
    assert request.config.format.sample_rate_hz == 16000
    assert request.config.language == "en"


async def test_first_audio_is_sent_before_the_llm_has_finished(channel: grpc.aio.Channel,
                                                               fakes: FakeStack) -> None:
    fakes.llm.deltas = ["The first sentence. ", "The second ", "sentence."]
    fakes.llm.gate = asyncio.Event()
    fakes.llm.gate_after = 1  # the LLM stops after the first sentence until the test lets it go
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_text("Tell me two things.")

    head = await read_until(conv, "audio")
    assert head.kinds == ["transcript", "assistant_text", "audio_format", "audio"]
    assert not fakes.llm.log.finished.is_set()  # audio of sentence 1 is out, the LLM is still going
    assert fakes.tts.texts == ["The first sentence."]
    fakes.llm.gate.set()
    rest = await read_turn(conv)
    assert rest.metrics.status == voice_pb2.COMPLETED, rest.metrics.error
    assert rest.metrics.sentences == 2
    assert fakes.tts.texts == ["The first sentence.", "The second sentence."]
    assert rest.metrics.time_to_first_audio_ms < rest.metrics.llm_total_ms


async def test_a_long_first_sentence_starts_speaking_at_its_first_clause(
        channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.llm.deltas = ["Water boils at one hundred degrees, ", "which is 212 ", "Fahrenheit, at sea level."]
    fakes.llm.gate = asyncio.Event()
    fakes.llm.gate_after = 2  # the LLM pauses inside the first sentence, after its first clause
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_text("When does water boil?")

    head = await read_until(conv, "audio")
    assert fakes.tts.texts == ["Water boils at one hundred degrees,"]
    assert "audio" in head.kinds and not fakes.llm.log.finished.is_set()
    fakes.llm.gate.set()
    rest = await read_turn(conv)
    assert rest.metrics.status == voice_pb2.COMPLETED, rest.metrics.error
    assert fakes.tts.texts == [
        "Water boils at one hundred degrees,", "which is 212 Fahrenheit, at sea level."]


async def test_history_is_sent_on_the_second_turn(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings(system_prompt="Be brief."))
    await conv.send_text("First question?")
    await read_turn(conv)
    fakes.llm.deltas = ["Second answer."]
    await conv.send_text("Second question?")
    second = await read_turn(conv)

    assert second.number == 2
    assert second.metrics.status == voice_pb2.COMPLETED
    first_req, second_req = fakes.llm.requests
    assert [(m.role, m.content) for m in first_req.messages] == [
        ("system", "Be brief."), ("user", "First question?")]
    assert [(m.role, m.content) for m in second_req.messages] == [
        ("system", "Be brief."), ("user", "First question?"),
        ("assistant", "Hello there. How can I help?"), ("user", "Second question?")]


async def test_default_system_prompt_and_session_options_reach_the_llm(channel: grpc.aio.Channel,
                                                                      fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings(llm_providers=["local"], no_cache=True,
                      sampling={"temperature": 0.2, "max_tokens": 40}))
    await conv.send_text("Hi")
    await read_turn(conv)
    request = fakes.llm.requests[0]
    assert request.messages[0].role == "system" and request.messages[0].content == DEFAULT_SYSTEM_PROMPT
    assert list(request.providers) == ["local"] and request.no_cache
    assert request.sampling.HasField("temperature") and abs(request.sampling.temperature - 0.2) < 1e-6
    assert not request.sampling.HasField("top_p") and request.sampling.max_tokens == 40


async def test_wav_output_is_one_streaming_wav_per_turn(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings(
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV, sample_rate_hz=22050), voice="fake:fr"))
    await conv.send_text("Hi")
    turn = await read_turn(conv)
    fmt = next(e.audio_format for e in turn.events if e.HasField("audio_format"))
    assert fmt.encoding == audio_pb2.WAV and fmt.sample_rate_hz == 22050 and fmt.channels == 1
    rate, samples = read_streamed_wav(turn.audio)
    assert rate == 22050
    assert abs(len(samples) / rate - turn.metrics.reply_audio_seconds) < 0.01
    assert turn.audio.count(b"RIFF") == 1  # sentence 2 did not start a second WAV
    assert np.abs(samples).max() > 1000  # the tone, not silence


async def test_empty_transcript_skips_the_llm(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.stt.transcript = ""
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K))
    await conv.send_audio(silence_pcm(0.3))
    await conv.send_end_of_utterance()
    turn = await read_turn(conv)
    assert turn.kinds == ["transcript", "metrics"]
    assert turn.transcript == ""
    assert turn.metrics.status == voice_pb2.FAILED
    assert "no speech recognised" in turn.metrics.error
    assert fakes.llm.log.calls == 0


async def test_server_vad_ends_the_utterance_on_silence(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K, server_vad=True, vad_silence_ms=300))
    leading, speech, trailing = silence_pcm(1.0), tone_pcm(0.6), silence_pcm(0.4)
    await conv.send_audio(leading + speech + trailing, chunk_bytes=640)  # 20 ms chunks; no end_of_utterance
    turn = await read_turn(conv)

    assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
    # the audio went to STT's Listen stream, which ended the turn (its own VAD and turn detector)
    (listen,) = fakes.stt.listen_configs
    assert listen.turn.silence_ms == 300 and listen.recognition.format.sample_rate_hz == 16000
    assert not fakes.stt.requests  # no whole-utterance Transcribe
    assert turn.transcript == "What time is it?"
    assert 0 < turn.metrics.endpointing_ms <= turn.metrics.end_of_speech_to_first_audio_ms
    # more silence: no new turn; a second utterance: a second turn
    await conv.send_audio(silence_pcm(1.0) + tone_pcm(0.4) + silence_pcm(0.4), chunk_bytes=640)
    second = await read_turn(conv)
    assert second.number == 2 and fakes.stt.log.calls == 1  # one Listen stream for the conversation


async def test_text_input_replaces_an_unfinished_utterance(channel: grpc.aio.Channel,
                                                           fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K))
    await conv.send_audio(tone_pcm(0.2, freq=300))  # started speaking, then typed instead
    await conv.send_text("Typed instead.")
    typed = await read_turn(conv)
    assert typed.transcript == "Typed instead." and fakes.stt.log.calls == 0
    speech = tone_pcm(0.3, freq=500)
    await conv.send_audio(speech)
    await conv.send_end_of_utterance()
    spoken = await read_turn(conv)
    assert spoken.number == 2 and fakes.stt.requests[0].audio == speech
