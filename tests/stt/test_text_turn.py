"""The words' veto on end of turn: ``text_turn`` and how the Endpointer and the Listen stream use it.

No models here: a scripted VAD, a fixed "voice" judgement and a scripted transcriber, so each test
says exactly when speech, pauses and transcripts happen (the real-model check is in
test_stt_listen.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from scripted import ScriptedVad, tone

from voxline.common.audio import float_to_pcm16
from voxline.stt.detectors import TurnDetectors
from voxline.stt.endpoint import (
    Endpointer,
    EndpointSettings,
    EndReason,
    PauseDetected,
    SpeechPaused,
    SpeechStarted,
    TurnEnded,
)
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcript
from voxline.stt.listen import Final, Interim, ListenRequest, RecognitionCost, listen_stream
from voxline.stt.stream import StreamFormat
from voxline.stt.text_model import TextTurnModel
from voxline.stt.text_turn import (
    RARELY_FINISHED,
    UNFINISHED,
    UNLIKELY_END,
    UNPUNCTUATED,
    WordsJudge,
    text_complete_probability,
)

RATE = 16_000


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("Could you tell me how long it takes to drive from?", "en", RARELY_FINISHED),
    ("Set a timer for 20 minutes and remind me to...", "en", UNFINISHED),
    ("Can you find a good Italian restaurant near the", "en", UNFINISHED),
    ("I'd like a coffee and", "en-US", UNFINISHED),
    ("Send a message to my sister,", "en", UNFINISHED),
    ("Please call Stella and ask", "en", UNPUNCTUATED),
    ("Je voudrais réserver une table pour", "fr", RARELY_FINISHED),
    ("Quel temps fait-il à Paris et", "fr", UNFINISHED),
    # words that may well end a sentence: no opinion (the voice decides)
    ("Could you tell me how long it takes to drive from Boston to New York City?", "en", None),
    ("Send a message to my sister.", "en", None),
    ("Where are you from?", "en", RARELY_FINISHED),  # a preposition: waits longer, still ends
    ("Quel temps fait-il à Paris ?", "fr", None),
    ("", "en", None),
    # other languages: only a trailing mark speaks (no word lists, no final-stop rule)
    ("Wie spät ist es", "de", None),
    ("Wie spät ist es...", "de", UNFINISHED),
])
def test_the_words_say_when_a_sentence_is_unfinished(text: str, language: str,
                                                     expected: float | None) -> None:
    assert text_complete_probability(text, language) == expected



def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def feed_all(ep: Endpointer, audio: np.ndarray) -> list[object]:
    events: list[object] = []
    for i in range(0, len(audio), 320):
        events += ep.feed(audio[i:i + 320])
        events += ep.judge()
    return events


def sure_voice(audio: np.ndarray) -> float:
    return 0.98  # Smart Turn, fooled by a falling voice mid-sentence


SETTINGS = EndpointSettings(pause_ms=100, early_pause_ms=40, complete_silence_ms=200,
                            incomplete_silence_ms=1500)


def test_words_that_arrive_before_the_judgement_make_the_turn_wait() -> None:
    ep = Endpointer(ScriptedVad(), SETTINGS, sure_voice, defer_judgement=True)
    events = feed_all(ep, np.concatenate([silence(0.2), tone(0.5), silence(0.06)]))
    pause = next(e for e in events if isinstance(e, PauseDetected))
    assert ep.judge_text(pause.epoch, RARELY_FINISHED) == []  # kept for the judgement
    events = feed_all(ep, silence(0.8))
    (paused,) = [e for e in events if isinstance(e, SpeechPaused)]
    assert paused.probability == RARELY_FINISHED and paused.text_probability == RARELY_FINISHED
    assert paused.silence_limit_ms == 1110  # not the 200 ms of a complete sentence
    assert not any(isinstance(e, TurnEnded) for e in events) and ep.turn_open
    (ended,) = [e for e in feed_all(ep, silence(0.5)) if isinstance(e, TurnEnded)]
    assert ended.reason is EndReason.SILENCE and ended.ended_at_s == pytest.approx(0.7 + 1.11, abs=0.021)


def test_words_that_arrive_after_the_end_withdraw_it_while_the_longer_limit_runs() -> None:
    ep = Endpointer(ScriptedVad(), SETTINGS, sure_voice, defer_judgement=True)
    events = feed_all(ep, np.concatenate([silence(0.2), tone(0.5), silence(0.3)]))
    (first_end,) = [e for e in events if isinstance(e, TurnEnded)]
    assert first_end.reason is EndReason.COMPLETE and not ep.turn_open
    (again,) = ep.judge_text(first_end.epoch, UNFINISHED)
    assert again.silence_limit_ms == 1370 and again.epoch == first_end.epoch
    assert ep.turn_open  # withdrawn: the turn goes on
    resumed = feed_all(ep, np.concatenate([silence(0.3), tone(0.4), silence(0.3)]))
    assert isinstance(resumed[0], SpeechStarted) and resumed[0].continues_turn and resumed[0].turn == 1
    # a stale word judgement (speech since) changes nothing
    assert ep.judge_text(first_end.epoch, UNFINISHED) == []


def test_an_end_stands_when_the_longer_limit_has_passed_or_the_client_ended_it() -> None:
    ep = Endpointer(ScriptedVad(), SETTINGS, sure_voice, defer_judgement=True)
    events = feed_all(ep, np.concatenate([silence(0.2), tone(0.5), silence(1.6)]))
    (ended,) = [e for e in events if isinstance(e, TurnEnded)]
    assert ep.judge_text(ended.epoch, UNFINISHED) == [] and not ep.turn_open
    ep.reply_started()
    feed_all(ep, tone(0.3))
    (client_end,) = ep.end_turn()
    assert ep.judge_text(client_end.epoch, UNFINISHED) == [] and not ep.turn_open


def test_words_that_do_not_object_and_a_switched_off_veto_leave_the_voice_alone() -> None:
    for settings, text in ((SETTINGS, None), (EndpointSettings(pause_ms=100, text_veto=False), UNFINISHED)):
        ep = Endpointer(ScriptedVad(), settings, sure_voice, defer_judgement=True)
        events = feed_all(ep, np.concatenate([silence(0.2), tone(0.5), silence(0.3)]))
        (ended,) = [e for e in events if isinstance(e, TurnEnded)]
        assert ep.judge_text(ended.epoch, text) == [] and ended.reason is EndReason.COMPLETE


class ScriptedTranscriber:
    """Returns ``texts`` in order, each after ``delay_s`` (the recogniser's cost)."""

    max_audio_seconds = 120.0

    def __init__(self, texts: list[str], delay_s: float) -> None:
        self.texts, self.delay_s, self.calls = list(texts), delay_s, 0

    def check_options(self, options: RecognitionOptions) -> None:
        return None

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        await asyncio.sleep(self.delay_s)
        text = self.texts[min(self.calls, len(self.texts) - 1)]
        self.calls += 1
        return Transcript(text=text, language="en", language_probability=1.0, segments=(),
                          audio_seconds=len(audio.data) / 2 / RATE, processing_ms=self.delay_s * 1000,
                          decode_ms=0.0)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        return await self.transcribe(audio, options)


async def run_listen(engine: ScriptedTranscriber, audio: np.ndarray,
                     paced: Callable[[int], float], cost: RecognitionCost | None = None,
                     read_words: Callable[[str, str], float | None] = text_complete_probability,
                     ) -> list[object]:
    """Stream ``audio`` as 20 ms chunks, sleeping ``paced(i)`` seconds before chunk ``i``."""
    data = float_to_pcm16(audio)

    async def requests() -> AsyncIterator[ListenRequest]:
        for i in range(0, len(data), 640):
            await asyncio.sleep(paced(i // 640))
            yield data[i:i + 640]

    async def inline(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    fmt = StreamFormat("pcm_s16le", RATE, 1)
    ep = Endpointer(ScriptedVad(), SETTINGS, sure_voice, defer_judgement=True)
    return [e async for e in listen_stream(engine, ep, fmt, RecognitionOptions(language="en"), requests(),
                                           interim_interval_s=0.0, max_turn_seconds=60.0,
                                           run_blocking=inline, cost=cost, read_words=read_words)]


@pytest.mark.parametrize("recogniser_s", [0.0, 0.3])
async def test_an_unfinished_sentence_is_one_turn_with_a_fast_or_a_slow_recogniser(
        recogniser_s: float) -> None:
    """The voice says "complete" at the pause; the words ("…drive from?") say no. A fast recogniser
    answers before the 200 ms limit, a slow one after it (the end is withdrawn): either way the
    speech after the 700 ms pause continues the same turn, and the only Final has all of it."""
    engine = ScriptedTranscriber(["how long it takes to drive from?",
                                  "how long it takes to drive from Boston?"], recogniser_s)
    audio = np.concatenate([silence(0.2), tone(0.8), silence(0.7), tone(0.5), silence(1.0)])
    # real time around the pause (the recogniser's speed matters there), faster elsewhere
    events = await run_listen(engine, audio, lambda i: 0.02 if 45 <= i < 90 else 0.0)
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.transcript.text for f in finals] == ["how long it takes to drive from Boston?"]
    vetoed = [e for e in events if isinstance(e, SpeechPaused) and e.text_probability == RARELY_FINISHED]
    assert vetoed and vetoed[0].silence_limit_ms == 1110
    assert any(isinstance(e, Interim) and e.at_pause for e in events)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == 2 and starts[1].continues_turn


async def test_a_finished_sentence_still_ends_after_the_short_silence() -> None:
    engine = ScriptedTranscriber(["how long it takes to drive from Boston?"], 0.0)
    audio = np.concatenate([silence(0.2), tone(0.8), silence(1.0)])
    events = await run_listen(engine, audio, lambda i: 0.0)
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.ended.reason is EndReason.COMPLETE
    assert final.ended.ended_at_s - final.ended.end_of_speech_s == pytest.approx(0.2, abs=0.021)


def test_the_detector_does_not_hear_the_silence_of_a_pause_the_speech_went_on_after() -> None:
    """Smart Turn doubts a sentence's real end when it hears a long pause inside it, so the part of
    such a pause beyond ``pause_heard_ms`` is cut from what it judges (the turn's audio for the
    recogniser keeps it)."""
    heard: list[np.ndarray] = []
    settings = EndpointSettings(pause_ms=96, pause_heard_ms=64, incomplete_silence_ms=1500)
    ep = Endpointer(ScriptedVad(), settings,
                    lambda audio: heard.append(audio) or 0.1, defer_judgement=True)
    feed_all(ep, np.concatenate([silence(0.4), tone(0.6), silence(0.7), tone(0.6), silence(0.2)]))
    assert len(heard) == 2 and ep.turn == 1 and ep.turn_start_s == pytest.approx(0.1)

    def longest_inner_silence(audio: np.ndarray) -> float:
        voiced = np.flatnonzero(audio)
        gaps = np.diff(voiced) - 1
        return float(gaps.max()) / RATE if len(gaps) else 0.0

    assert longest_inner_silence(heard[0]) == 0.0
    # the second judgement hears the 0.6 s of speech, 64 ms of the pause, the 0.6 s of speech
    assert longest_inner_silence(heard[1]) == pytest.approx(0.064, abs=0.021)
    assert len(heard[1]) / RATE == pytest.approx(0.3 + 0.6 + 0.064 + 0.6 + 0.096, abs=0.05)


@pytest.mark.parametrize("with_model", [True, False])
async def test_a_question_that_lacks_its_verb_is_one_turn_with_the_language_model(
        with_model: bool, text_model: TextTurnModel) -> None:
    """The benchmark's split: the voice says "complete" at "What time does the pharmacy on Main"
    (Smart Turn: 0.85), Whisper writes "…on Main." (or "…on Mainst?") and the word lists have nothing
    against it. The language model reads the missing verb: one turn. Without it, two (the first one
    half a question). "…on Main." keeps a 20x margin to the threshold on every CPU measured;
    "…on Mainst?" sits within 15-33% of it and may read either way (see test_text_model)."""
    engine = ScriptedTranscriber(["What time does the pharmacy on Main.",
                                  "What time does the pharmacy on Main Street close on Saturday evenings?"],
                                 0.0)
    audio = np.concatenate([silence(0.2), tone(0.8), silence(0.7), tone(0.5), silence(1.0)])
    judge = WordsJudge(text_model if with_model else None)
    events = await run_listen(engine, audio, lambda i: 0.0, read_words=judge)
    finals = [e.transcript.text for e in events if isinstance(e, Final)]
    if with_model:
        assert finals == ["What time does the pharmacy on Main Street close on Saturday evenings?"]
        vetoed = [e for e in events if isinstance(e, SpeechPaused) and e.text_probability == UNLIKELY_END]
        assert len(vetoed) == 1 and vetoed[0].silence_limit_ms > 1000
    else:
        assert len(finals) == 2 and finals[0] == "What time does the pharmacy on Main."


async def test_words_that_cannot_be_read_cost_their_opinion_not_the_turn(
        caplog: pytest.LogCaptureFixture) -> None:
    """A failing text model: the stream goes on, the words have no opinion, the turn ends on the
    voice's judgement with its transcript, and the failure is logged."""
    def broken(text: str, language: str) -> float | None:
        raise RuntimeError("model file truncated")

    engine = ScriptedTranscriber(["how long it takes to drive from Boston?"], 0.0)
    audio = np.concatenate([silence(0.2), tone(0.8), silence(1.0)])
    events = await run_listen(engine, audio, lambda i: 0.0, read_words=broken)
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.transcript.text == "how long it takes to drive from Boston?"
    assert final.ended.reason is EndReason.COMPLETE
    assert "could not be read" in caplog.text


def test_the_veto_and_the_heard_pause_are_server_flags() -> None:
    from voxline.stt.config import parse

    assert parse([]).turns.text_veto and parse([]).turns.pause_heard_ms == 64
    assert parse([]).turns.early_transcript_max_ms == 600
    turns = parse(["--text-veto", "false", "--pause-heard-ms", "-1",
                   "--early-transcript-max-ms", "0"]).turns
    assert not turns.text_veto and turns.pause_heard_ms == -1 and turns.early_transcript_max_ms == 0
    cost = TurnDetectors(turns).cost
    cost.add(1.0)
    assert not cost.early_start_pays  # 0: never at the early pause


@pytest.mark.parametrize(("recogniser_ms", "transcriptions"), [(25.0, 2), (400.0, 2), (1000.0, 1)])
async def test_a_slow_recogniser_does_not_transcribe_a_gap_between_words(
        recogniser_ms: float, transcriptions: int) -> None:
    """A 60 ms gap is an early pause (40 ms) but not a pause (100 ms). A fast recogniser (up to
    600 ms a pass) transcribes at the early pause (stale when the speech goes on: cheap enough); a
    slow one waits until the pause is certain, so that no stale pass holds its worker when the real
    pause comes."""
    cost = RecognitionCost()
    cost.add(recogniser_ms)
    engine = ScriptedTranscriber(["how long", "how long it takes"], 0.0)
    audio = np.concatenate([silence(0.2), tone(0.5), silence(0.06), tone(0.5), silence(0.5)])
    events = await run_listen(engine, audio, lambda i: 0.0, cost)
    assert engine.calls == transcriptions
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.ended.turn == 1 and final.ended.end_of_speech_s == pytest.approx(1.26, abs=0.021)
