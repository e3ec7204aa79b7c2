"""The words' side of end of turn: does the pause transcript read as an unfinished sentence?

Smart Turn hears the voice (intonation, rhythm) and is sometimes sure that a sentence is finished
where the words are not: "…how long it takes to drive from" scored 0.98. The recogniser's text at
the pause says what the voice cannot: a sentence does not end on "the", "my" or "and", and Whisper
writes "..." or a comma, or leaves out the final stop, when what it heard trails off.

This is a veto, never a confirmation: text can say "unfinished", not "finished" (Whisper
punctuates most prefixes as sentences: "Send a message to my sister." may well go on). The
Endpointer takes the lower of the voice's and the words' probabilities, so a veto turns the short
silence limit into a longer one (``endpoint.silence_limit_ms``). Cost: a few microseconds.

Word lists (and the missing final stop) are kept for English and French; in other languages only
a trailing mark speaks. Where the lists have no opinion on English text, a small language model
(``text_model``) may still read it as unfinished: "What time does the pharmacy on Main" ends on a
noun, and lacks its verb (``WordsJudge``).
"""

from __future__ import annotations

import re
from typing import Protocol

from voxline.stt.text_model import UNLIKELY

#: What Whisper writes when speech trails off mid-sentence.
_TRAILING = ("...", "…", ",", ";", ":", "-", "–", "—")
#: Marks that end a sentence (Whisper's, in the scripts it writes).
_FINAL = (".", "?", "!", "。", "？", "！", "؟", "।")

#: P(complete) when the text trails off or ends on a word no sentence ends on.
UNFINISHED = 0.05
#: ... ends on a word that rarely ends one (a preposition: "Where are you from?" is fine).
RARELY_FINISHED = 0.15
#: ... has no final mark at all (Whisper leaves it out when the voice does not fall).
UNPUNCTUATED = 0.2
#: ... reads as unfinished to the language model (its P(final stop) is below its threshold).
UNLIKELY_END = 0.1

#: Words no sentence ends on: articles, possessive determiners, coordinating conjunctions.
_NEVER_LAST = {
    "en": frozenset("a an the my your our their its and or but nor because than whether unless".split()),
    "fr": frozenset("le la les un une des du au aux et ou mais mon ma mes ton ta tes son sa ses notre "
                    "votre nos vos leurs parce puisque lorsque".split()),
}
#: Words a sentence rarely ends on (prepositions: English may leave one at the end).
_RARELY_LAST = {
    "en": frozenset("to from of for with in on at about into onto near by through between without "
                    "under over towards toward across".split()),
    "fr": frozenset("de à pour avec dans sur sans chez vers entre par en".split()),
}
_WORD = re.compile(r"[\w'’]+", re.UNICODE)


def text_complete_probability(text: str, language: str) -> float | None:
    """P(complete) as far as the words tell, or None when they do not say it is unfinished.

    ``language``: the transcript's language code ("en", "en-US", "fr"...)."""
    stripped = text.strip().strip("\"'“”»«)")
    if not stripped:
        return None
    if stripped.endswith(_TRAILING):
        return UNFINISHED
    words = _WORD.findall(stripped.lower())
    lang = language.lower().split("-")[0]
    last = words[-1] if words else ""
    if last in _NEVER_LAST.get(lang, ()):
        return UNFINISHED
    if last in _RARELY_LAST.get(lang, ()):
        return RARELY_FINISHED
    if lang in _NEVER_LAST and not stripped.endswith(_FINAL):
        return UNPUNCTUATED
    return None


class EndModel(Protocol):
    def end_probability(self, text: str) -> float: ...


class WordsJudge:
    """The words' P(complete): the word lists first; where they have no opinion on English text,
    the language model's P(final stop) below ``unlikely`` reads as unfinished (``UNLIKELY_END``).
    Blocking (the model takes ~30 ms): call it from a worker thread."""

    def __init__(self, model: EndModel | None = None, unlikely: float = UNLIKELY) -> None:
        self.model, self.unlikely = model, unlikely

    def __call__(self, text: str, language: str) -> float | None:
        probability = text_complete_probability(text, language)
        if (probability is not None or self.model is None or not text.strip()
                or language.lower().split("-")[0] != "en"):
            return probability
        return UNLIKELY_END if self.model.end_probability(text) < self.unlikely else None
