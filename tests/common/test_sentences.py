"""Sentence cutting for streamed replies."""

from __future__ import annotations

import pytest

from voxline.common.sentences import RepetitionGuard, SentenceChunker, split_sentences


def test_split_keeps_abbreviations_and_decimals() -> None:
    text = "Hello there. Dr. Smith is 3.5 m tall! Is it? Yes... ok"
    assert list(split_sentences(text)) == [
        "Hello there.", "Dr. Smith is 3.5 m tall!", "Is it?", "Yes...", "ok"]


def test_french_punctuation_and_quotes() -> None:
    text = "Bonjour ! Ça va ? « Oui. » Très bien."
    assert list(split_sentences(text)) == ["Bonjour !", "Ça va ?", "« Oui. »", "Très bien."]


def test_streaming_emits_a_sentence_only_when_complete() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("The first sen") == []
    assert chunker.feed("tence is here.") == []  # no space yet: could be "here.com"
    assert chunker.feed(" The second") == ["The first sentence is here."]
    assert chunker.feed(" one ends!\n") == ["The second one ends!"]
    assert chunker.flush() == []


def test_min_chars_joins_short_sentences() -> None:
    chunker = SentenceChunker(min_chars=10)
    assert chunker.feed("Oui. Je pense que oui. ") == ["Oui. Je pense que oui."]


def test_max_chars_cuts_run_on_text_at_a_space() -> None:
    chunker = SentenceChunker(max_chars=20)
    out = chunker.feed("word " * 10)
    assert out and all(len(s) <= 20 for s in out)
    assert " ".join(out + chunker.flush()).split() == ["word"] * 10


def test_first_clause_is_cut_early_only_once() -> None:
    chunker = SentenceChunker(first_clause_chars=20)
    assert chunker.feed("Water boils at 100 degrees,") == []  # no space after the comma yet
    assert chunker.feed(" which is 212") == ["Water boils at 100 degrees,"]
    assert chunker.feed(" Fahrenheit, at sea level. Then, it turns to steam. ") == [
        "which is 212 Fahrenheit, at sea level.", "Then, it turns to steam."]


def test_first_clause_keeps_numbers_and_short_clauses_whole() -> None:
    chunker = SentenceChunker(first_clause_chars=20)
    assert chunker.feed("Yes, it is 1,000 metres") == []  # "Yes," is too short; "1,000" has no space
    assert chunker.feed(" high, roughly. ") == ["Yes, it is 1,000 metres high, roughly."]


def test_first_clause_off_by_default() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("A long first clause here, and more ") == []


NUMBERS = "It costs 1,000 dollars, or 3.5 percent more, at 3:30 p.m. today. Then 2,500.75 euros."


def test_numbers_stay_whole_token_by_token_also_at_the_first_clause() -> None:
    # One character at a time, the worst case of an LLM's streamed deltas, with the first-clause
    # cut on and short enough to fire at every ", " it is allowed to.
    chunker = SentenceChunker(first_clause_chars=3)
    pieces = [s for char in NUMBERS for s in chunker.feed(char)] + chunker.flush()
    assert pieces == ["It costs 1,000 dollars,", "or 3.5 percent more, at 3:30 p.m. today.",
                      "Then 2,500.75 euros."]


def test_numbers_stay_whole_in_a_complete_text() -> None:
    assert list(split_sentences("The bridge is 1,000 m long. It rose 3.5 metres. Done.")) == [
        "The bridge is 1,000 m long.", "It rose 3.5 metres.", "Done."]
    assert list(split_sentences("Costs 3. 5 people came.")) == ["Costs 3.", "5 people came."]


def test_the_first_piece_is_capped_at_a_space_or_hard() -> None:
    chunker = SentenceChunker(first_clause_chars=20, first_max_chars=40)
    assert chunker.feed("Le capital de France est le 75" + "4" * 30) == ["Le capital de France est le"]
    assert chunker.feed("4" * 50) == []  # the cap is for the first piece only
    hard = SentenceChunker(first_max_chars=10)
    assert hard.feed("7" * 25) == ["7" * 10]


@pytest.mark.parametrize("text", [
    "It costs 1,000,000 dollars, that is 1000000.",
    "Very, very, very good. Ha ha ha ha!",
    "The code is 0000 0000. No no no, that's wrong.",
    "Le numéro est le 01 23 45 67 89.",
])
def test_what_people_say_is_not_a_loop(text: str) -> None:
    guard = RepetitionGuard()
    assert all(guard.feed(ch) is None for ch in text)


@pytest.mark.parametrize(("text", "kept"), [
    ("Le capital de France est le 75" + "4" * 60, "Le capital de France est le 754"),
    ("I think " + "the " * 20, "I think the"),
    ("Hello! " + "ha" * 40, "Hello! ha"),
])
def test_a_loop_is_noticed_and_cut_after_one_copy(text: str, kept: str) -> None:
    guard = RepetitionGuard()
    cuts = [guard.feed(ch) for ch in text]
    first = next(c for c in cuts if c is not None)
    assert text[:first] == kept
