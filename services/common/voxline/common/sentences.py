"""Cut streamed text into sentences, so each can be spoken as soon as it is complete."""

from __future__ import annotations

import re
from collections.abc import Iterator

# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets; French puts a space
# before ») and then whitespace.
# Abbreviations like "e.g.", "Dr." or "p.m." and decimals "3.5" are kept together.
_END = re.compile(r"""([.!?…]+(?:[\s\u00a0\u202f]?»|["'”’)\]])*)(\s+)""")
# A clause ends at , ; : followed by whitespace ("1,000" and "3:30" stay whole).
_CLAUSE = re.compile(r"([,;:])(\s+)")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e mme mlle m no p.ex cf fig approx a.m p.m".split()
)


def _is_abbreviation(text_before: str) -> bool:
    word = text_before.rsplit(None, 1)[-1].lower().rstrip(".") if text_before.strip() else ""
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


class SentenceChunker:
    """Incremental sentence splitter: ``feed`` text deltas, get complete sentences back.

    A sentence shorter than ``min_chars`` is held and joined to the next one (speaking "Oui." alone
    costs a TTS round trip for little audio). ``flush`` returns whatever is left at the end.

    ``first_clause_chars`` > 0 lets the *first* piece of a reply end at a clause boundary (, ; :)
    once it has that many characters: a one-sentence reply ("The capital of France is Paris, a
    city of two million people.") then starts speaking after its first clause instead of after the
    LLM's last token, which is what time to first audio is made of. Later pieces are whole sentences.

    ``first_max_chars`` > 0 caps the first piece: a reply with no clause boundary for that long (a
    number written out digit by digit, a run-on sentence) starts speaking at the last space before
    the cap, or at the cap itself where there is none, instead of waiting for the LLM's last token.
    """

    def __init__(self, min_chars: int = 1, max_chars: int = 400, first_clause_chars: int = 0,
                 first_max_chars: int = 0) -> None:
        self._buffer = ""
        self._min_chars = min_chars
        self._max_chars = max_chars
        self._first_clause_chars = first_clause_chars
        self._first_max_chars = first_max_chars
        self._emitted = False

    def feed(self, delta: str) -> list[str]:
        """Add text; return the sentences it completed (possibly none)."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            end = match.end(1)
            candidate = self._buffer[start:end].strip()
            if _is_abbreviation(self._buffer[start:match.start(1)]):
                continue
            if len(candidate) < self._min_chars:
                continue
            out.append(candidate)
            start = match.end()
        self._buffer = self._buffer[start:]
        if not out and not self._emitted and self._first_clause_chars > 0:
            for match in _CLAUSE.finditer(self._buffer):
                candidate = self._buffer[:match.end(1)].strip()
                if len(candidate) >= self._first_clause_chars:
                    out.append(candidate)
                    self._buffer = self._buffer[match.end():]
                    break
        if not out and not self._emitted and 0 < self._first_max_chars < len(self._buffer):
            out.append(self._cut(self._first_max_chars))
        while len(self._buffer) > self._max_chars:  # no punctuation for too long: cut at a space
            out.append(self._cut(self._max_chars))
        out = [s for s in out if s]
        self._emitted = self._emitted or bool(out)
        return out

    def _cut(self, limit: int) -> str:
        """The buffer's head up to its last space before ``limit`` (or ``limit`` chars: no space)."""
        cut = self._buffer.rfind(" ", 0, limit)
        cut = cut if cut > 0 else limit
        head, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        return head

    def drop_tail(self, chars: int) -> None:
        """Forget the last ``chars`` characters fed, as far as they are still held (not yet out)."""
        if chars > 0:
            self._buffer = self._buffer[:max(0, len(self._buffer) - chars)]

    def flush(self) -> list[str]:
        """The rest of the text as a last sentence (if any)."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []


def split_sentences(text: str, min_chars: int = 1, max_chars: int = 400) -> Iterator[str]:
    """All sentences of a complete text, in order."""
    chunker = SentenceChunker(min_chars=min_chars, max_chars=max_chars)
    yield from chunker.feed(text)
    yield from chunker.flush()


# A unit of 1 to 16 characters repeated back to back to the end of the text (lazy: the shortest).
_REPEATED_TAIL = re.compile(r"(.{1,16}?)\1+$", re.DOTALL)


class RepetitionGuard:
    """Notices a reply that has degenerated into a loop ("7544444444…", "the the the the…").

    ``feed`` each text delta; it returns how many characters of the reply to keep once the reply's
    tail is one short unit repeated ``min_repeats`` times or more over ``min_chars`` or more (the
    text before the loop and one copy of its unit), else None. Numbers and emphasis people say
    ("1,000,000", "very, very") stay far below both bounds.
    """

    def __init__(self, min_repeats: int = 8, min_chars: int = 32, window: int = 256) -> None:
        self._min_repeats, self._min_chars, self._window = min_repeats, min_chars, window
        self._tail = ""
        self._fed = 0

    def feed(self, delta: str) -> int | None:
        self._fed += len(delta)
        self._tail = (self._tail + delta)[-self._window:]
        match = _REPEATED_TAIL.search(self._tail.rstrip())
        if match is None:
            return None
        unit, span = match.group(1), match.end() - match.start()
        if span < self._min_chars or span < self._min_repeats * len(unit):
            return None
        dropped = len(self._tail) - match.start() - len(unit)
        return self._fed - dropped
