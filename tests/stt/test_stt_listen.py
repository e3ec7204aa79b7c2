"""The Listen stream over a real grpc.aio server with the real models: the packaged Whisper base,
Silero VAD and Smart Turn, on real synthesised speech with noise, sent as 20 ms PCM chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from speech import (
    PAUSE_PHRASE,
    PHRASE,
    PHRASE_2,
    add_noise,
    english_speech,
    silence,
    speech_with_pause,
    words,
)

from voxline.common.audio import float_to_pcm16, resample
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.stt.config import EngineSettings, TurnSettings
from voxline.stt.detectors import TurnDetectors
from voxline.stt.engine import WhisperTranscriber
from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

pytestmark = pytest.mark.slow

RATE = 16_000
CHUNK = 640  # bytes: 20 ms of 16 kHz mono s16le
TIMEOUT = 120


@pytest.fixture
async def stub(stt_cache_dir: Path) -> AsyncIterator[stt_pb2_grpc.SpeechToTextStub]:
    engine = WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en"))
    turns = TurnDetectors(TurnSettings())
    servicer = SpeechToTextServicer(engine, partial_interval_s=1.0, max_stream_bytes=1 << 24, turns=turns)

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    async def warm_up() -> None:
        await engine.warm_up()
        await turns.warm_up()

    running: RunningServer = await start_server(
        ServiceSpec(name="voxline-stt-test", grpc_services=[SERVICE_NAME], register=register,
                    warm_up=warm_up, close=engine.close), ServerConfig(port=0))
    await running.warm_up()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield stt_pb2_grpc.SpeechToTextStub(channel)
    finally:
        await running.stop(0)


def config(detector: int = stt_pb2.SMART_TURN, silence_ms: int = 0,
           encoding: int = audio_pb2.PCM_S16LE) -> stt_pb2.ListenRequest:
    fmt = audio_pb2.AudioFormat(encoding=encoding, sample_rate_hz=RATE, channels=1)
    return stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=fmt),
        turn=stt_pb2.TurnConfig(detector=detector, silence_ms=silence_ms)))


def pcm(samples: np.ndarray) -> bytes:
    return float_to_pcm16(samples)


def spoken(text: str) -> np.ndarray:
    samples, native = english_speech(text)
    return resample(np.asarray(samples), native, RATE)


class Listener:
    """One Listen call: writes 20 ms chunks, collects every event in a background reader."""

    def __init__(self, stub: stt_pb2_grpc.SpeechToTextStub) -> None:
        self.call = stub.Listen()
        self.events: list[stt_pb2.ListenResponse] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.call:
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def send(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            await self.call.write(stt_pb2.ListenRequest(audio=data[i:i + CHUNK]))

    async def wait_for(self, kind: str, count: int = 1, *, at_pause: bool = False
                       ) -> list[stt_pb2.ListenResponse]:
        """Wait (bounded) until ``count`` events of ``kind`` arrived; return them (with ``at_pause``:
        only pause transcripts)."""
        def seen() -> list[stt_pb2.ListenResponse]:
            return [e for e in self.events if e.WhichOneof("event") == kind
                    and (not at_pause or e.interim.at_pause)]

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(seen()) >= count), TIMEOUT)
        return seen()

    async def close(self) -> list[stt_pb2.ListenResponse]:
        await self.call.done_writing()
        await asyncio.wait_for(self._reader, TIMEOUT)
        assert await self.call.code() == grpc.StatusCode.OK
        return self.events

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]


async def test_a_sentence_with_a_pause_is_one_turn_with_the_whole_transcript(
        stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    sentence, cut_s = speech_with_pause(pause_s=0.7)
    cut = int(cut_s * RATE)
    audio = add_noise(np.concatenate([silence(0.5), sentence, silence(1.5)]), snr_db=20)
    resume = int(0.5 * RATE) + cut + int(0.7 * RATE)
    before, after = audio[:resume], audio[resume:]
    listener = Listener(stub)
    await listener.call.write(config())
    await listener.send(pcm(before))
    # the user is silent: the first part is judged, transcribed, and the turn is NOT ended
    paused = (await listener.wait_for("speech_paused"))[0].speech_paused
    interim = (await listener.wait_for("interim", at_pause=True))[0].interim
    assert paused.complete_probability < 0.5 and paused.silence_limit_ms > 1000
    assert interim.at_pause and interim.turn == 1
    heard = words(interim.result.text)  # the words before the pause (a name may come out misspelt)
    assert heard[:2] == ["please", "call"] and 4 <= len(heard) <= 7 and "store" not in heard
    assert "end_of_turn" not in listener.kinds()
    await listener.send(pcm(after))
    end = (await listener.wait_for("end_of_turn"))[0].end_of_turn
    events = await listener.close()
    starts = [e.speech_started for e in events if e.HasField("speech_started")]
    # one turn: every start after the first continues it (after the pause, and after any gap between
    # words long enough for an early pause transcript)
    assert not starts[0].continues_turn and all(s.continues_turn for s in starts[1:])
    assert any(s.continues_turn and s.at_s > 0.5 + cut_s + 0.6 for s in starts)  # the resumption
    assert [e.WhichOneof("event") for e in events].count("end_of_turn") == 1
    assert end.turn == 1 and end.reason == stt_pb2.COMPLETE
    assert words(end.transcript.text) == words(PAUSE_PHRASE)
    true_end = 0.5 + len(sentence) / RATE - 0.2  # Piper ends its audio with ~0.2 s of silence
    assert end.end_of_speech_s == pytest.approx(true_end, abs=0.3)
    assert end.ended_at_s - end.end_of_speech_s == pytest.approx(0.2, abs=0.05)
    # the pause transcript is what the final one was built from: the whole sentence, once
    last_interim = [e.interim for e in events if e.HasField("interim")][-1]
    assert last_interim.at_pause and last_interim.result.text == end.transcript.text


#: Smart Turn hears this sentence's first part, "…how long it takes to drive from", as complete
#: (0.98): only its words say that it is not.
DRIVE = "Could you tell me how long it takes to drive from Boston to New York City?"


async def test_the_words_withdraw_an_end_the_voice_judged_complete(
        stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    sentence, cut_s = speech_with_pause(DRIVE, 0.7, RATE, 1.84)
    audio = np.concatenate([silence(0.5), sentence, silence(1.5)])
    # the first part and 400 ms of silence at once: the turn ends on the audio clock (200 ms) long
    # before Whisper on this CPU has the words, so the end waits for them and is withdrawn
    resume = int((0.5 + cut_s + 0.4) * RATE)
    listener = Listener(stub)
    await listener.call.write(config())
    await listener.send(pcm(audio[:resume]))
    paused = await listener.wait_for("speech_paused", 2)
    voice, words_veto = paused[0].speech_paused, paused[1].speech_paused
    assert voice.complete_probability > 0.5 and voice.silence_limit_ms == 200
    interim = (await listener.wait_for("interim", at_pause=True))[0].interim
    assert words(interim.result.text)[-2:] == ["drive", "from"]
    # "from" ends few sentences (0.15), "from..." trails off (0.05)
    assert 0 < words_veto.text_complete_probability <= 0.15
    assert words_veto.complete_probability == words_veto.text_complete_probability
    assert words_veto.silence_limit_ms > 1000
    assert "end_of_turn" not in listener.kinds()
    await listener.send(pcm(audio[resume:]))
    end = (await listener.wait_for("end_of_turn"))[0].end_of_turn
    events = await listener.close()
    assert [e.WhichOneof("event") for e in events].count("end_of_turn") == 1
    assert end.turn == 1 and words(end.transcript.text) == words(DRIVE)


async def test_speech_after_an_ended_turn_continues_it_until_the_reply_starts(
        stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    listener = Listener(stub)
    await listener.call.write(config(stt_pb2.SILERO_VAD, silence_ms=300))
    await listener.send(pcm(np.concatenate([silence(0.3), spoken(PHRASE), silence(0.6)])))
    first = (await listener.wait_for("end_of_turn"))[0].end_of_turn
    assert words(first.transcript.text) == words(PHRASE) and first.reason == stt_pb2.SILENCE
    # no reply started yet: the user goes on, and the same turn now covers both sentences
    await listener.send(pcm(np.concatenate([spoken(PHRASE_2), silence(0.6)])))
    second = (await listener.wait_for("end_of_turn", 2))[1].end_of_turn
    assert second.turn == 1
    assert words(second.transcript.text) == words(PHRASE) + words(PHRASE_2)
    await listener.call.write(stt_pb2.ListenRequest(reply_started=stt_pb2.ReplyStarted()))
    await listener.send(pcm(np.concatenate([spoken(PHRASE), silence(0.6)])))
    third = (await listener.wait_for("end_of_turn", 3))[2].end_of_turn
    assert third.turn == 2 and words(third.transcript.text) == words(PHRASE)
    starts = [e.speech_started for e in await listener.close() if e.HasField("speech_started")]
    # (a gap between words may also "continue" the turn, after an early pause transcript)
    assert [(s.turn, s.continues_turn) for s in starts if not s.continues_turn] == [(1, False), (2, False)]


async def test_the_client_may_end_the_turn_and_the_stream_end_ends_it_too(
        stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    listener = Listener(stub)
    first = config()
    first.config.recognition.partial_interval_s = 0.5  # interims while speaking (default: at pauses)
    await listener.call.write(first)
    await listener.send(pcm(np.concatenate([silence(0.3), spoken(PHRASE)])))
    await listener.call.write(stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn()))
    ended = (await listener.wait_for("end_of_turn"))[0].end_of_turn
    assert ended.reason == stt_pb2.CLIENT and words(ended.transcript.text) == words(PHRASE)
    while_speaking = [e.interim for e in listener.events if e.HasField("interim")]
    assert while_speaking and not any(i.at_pause for i in while_speaking)
    assert words(while_speaking[0].result.text)[:2] == words(PHRASE)[:2]
    await listener.call.write(stt_pb2.ListenRequest(reply_started=stt_pb2.ReplyStarted()))
    await listener.send(pcm(np.concatenate([silence(0.3), spoken(PHRASE_2)])))
    events = await listener.close()  # half-close in mid-speech: the turn ends with what was said
    last = [e.end_of_turn for e in events if e.HasField("end_of_turn")][-1]
    assert last.turn == 2 and last.reason == stt_pb2.STREAM_END
    assert words(last.transcript.text) == words(PHRASE_2)


@pytest.mark.parametrize(("request_", "message"), [
    (config(encoding=audio_pb2.WAV), "raw PCM"),
    (config(detector=99), "turn detector"),
    (stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=audio_pb2.AudioFormat(
            encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE)),
        turn=stt_pb2.TurnConfig(incomplete_silence_ms=-5))), "incomplete_silence_ms"),
    (stt_pb2.ListenRequest(audio=b"\0\0"), "first message must be config"),
])
async def test_a_bad_stream_is_refused_with_invalid_argument(
        stub: stt_pb2_grpc.SpeechToTextStub, request_: stt_pb2.ListenRequest, message: str) -> None:
    call = stub.Listen()
    await call.write(request_)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
