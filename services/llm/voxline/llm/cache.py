"""Reply cache for short, common utterances ("Salut", "Ça va ?").

Two layers, both keyed on the normalised last user text (case, accents, punctuation and whitespace
folded away):

- a phrasebook, preloaded from a JSON or YAML file (``{"salut": "Salut ! ..."}``), that answers
  whatever the system prompt and provider chain (an operator wrote these replies on purpose);
- learned replies: each reply a provider completed normally for a short utterance, keyed also on
  the system prompt and the provider chain (provider:model list), kept in an LRU with a TTL.

Earlier turns of the conversation are not part of the key: the cache is meant for short phatic
turns whose answer does not depend on them.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHRASEBOOK_MODEL = "phrasebook"


def normalise(text: str) -> str:
    """Lower case, no accents (NFKD minus combining marks), punctuation as spaces, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = []
    for char in decomposed:
        category = unicodedata.category(char)
        if category.startswith("M"):
            continue
        kept.append(" " if category[0] in "PSZC" else char)
    return " ".join("".join(kept).casefold().split())


@dataclass(frozen=True)
class CachedReply:
    """A reply served from the cache, with the model that first wrote it."""

    text: str
    model: str


def load_phrasebook(path: str) -> dict[str, str]:
    """Read ``{utterance: reply}`` from a .json, .yaml or .yml file."""
    raw_text = Path(path).read_text(encoding="utf-8")
    data: Any
    if path.endswith((".yaml", ".yml")):
        import yaml  # type: ignore[import-untyped]

        data = yaml.safe_load(raw_text)
    else:
        data = json.loads(raw_text)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise ValueError(f"{path}: expected a mapping of utterance to non-empty reply text")
    return data


class ReplyCache:
    """LRU + TTL cache of replies to short utterances, with an optional preloaded phrasebook."""

    def __init__(self, max_words: int = 8, max_entries: int = 1024, ttl_s: float = 3600.0,
                 max_reply_chars: int = 600, phrasebook: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_words = max_words
        self._max_entries = max_entries
        self._ttl = ttl_s
        self._max_reply_chars = max_reply_chars
        self._clock = clock
        self._learned: OrderedDict[tuple[str, str, str], tuple[float, CachedReply]] = OrderedDict()
        self._phrasebook = {normalise(k): v for k, v in (phrasebook or {}).items() if normalise(k)}

    def __len__(self) -> int:
        return len(self._learned) + len(self._phrasebook)

    def key_text(self, text: str) -> str | None:
        """The normalised utterance, or None when it is not short enough to cache."""
        norm = normalise(text)
        if not norm or len(norm.split()) > self.max_words:
            return None
        return norm

    def get(self, text: str, system: str, chain: str) -> CachedReply | None:
        """The cached reply for this utterance, system prompt and provider chain, if any."""
        norm = self.key_text(text)
        if norm is None:
            return None
        key = (norm, system, chain)
        entry = self._learned.get(key)
        if entry is not None:
            expires, reply = entry
            if self._clock() < expires:
                self._learned.move_to_end(key)
                return reply
            del self._learned[key]
        phrase = self._phrasebook.get(norm)
        return CachedReply(phrase, PHRASEBOOK_MODEL) if phrase is not None else None

    def put(self, text: str, system: str, chain: str, reply: str, model: str) -> bool:
        """Remember a reply that completed normally; False when it is not cacheable."""
        norm = self.key_text(text)
        if (norm is None or not reply.strip() or len(reply) > self._max_reply_chars
                or self._ttl <= 0 or self._max_entries <= 0):
            return False
        key = (norm, system, chain)
        self._learned[key] = (self._clock() + self._ttl, CachedReply(reply, model))
        self._learned.move_to_end(key)
        while len(self._learned) > self._max_entries:
            self._learned.popitem(last=False)
        return True
