"""What a voice is, and the set of voices a server speaks with.

A voice turns one sentence into mono float32 samples. ``synthesize`` blocks (it runs a model or a C
library) and is called from a worker thread, never on the event loop. Engines import no grpc.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from voxline.common.errors import InvalidInput, clip

#: Said once per voice at start-up, so the first real request does not pay for lazy init.
WARM_UP_TEXT = "Warm up."


@runtime_checkable
class Voice(Protocol):
    """One voice of one engine, addressed by ``name`` (e.g. "espeak:fr", "vits:facebook/mms-tts-fra")."""

    @property
    def name(self) -> str: ...

    @property
    def engine(self) -> str:
        """"espeak", "vits" or "piper"."""
        ...

    @property
    def language(self) -> str: ...

    @property
    def sample_rate(self) -> int:
        """Native rate of the samples ``synthesize`` returns."""
        ...

    def synthesize(self, sentence: str) -> np.ndarray:
        """Speak one sentence: mono float32 samples in [-1, 1] at ``sample_rate`` (blocking)."""
        ...


class VoiceBook:
    """The voices a server has loaded, by name; the first is the default."""

    def __init__(self, voices: Iterable[Voice], default: str | None = None) -> None:
        self._voices: dict[str, Voice] = {}
        for voice in voices:
            if voice.name in self._voices:
                raise ValueError(f"two voices are named {voice.name!r}")
            self._voices[voice.name] = voice
        if not self._voices:
            raise ValueError("no voice configured: enable at least one espeak, vits or piper voice")
        names = list(self._voices)
        self.default = default or names[0]
        if self.default not in self._voices:
            raise ValueError(f"default voice {self.default!r} is not loaded; loaded: {', '.join(names)}")

    def names(self) -> list[str]:
        """Voice names, the default first."""
        return [self.default, *(n for n in self._voices if n != self.default)]

    def __iter__(self) -> Iterator[Voice]:
        return (self._voices[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._voices)

    def get(self, name: str) -> Voice:
        """The voice called ``name`` ("" → the default); InvalidInput listing the voices otherwise."""
        if not name:
            return self._voices[self.default]
        voice = self._voices.get(name)
        if voice is None:
            # A voice loaded from a server directory is named by its path: list it by count only
            # (ListVoices, an explicit request, names it).
            shown = [n for n in self.names() if not _is_path_name(n)]
            hidden = len(self) - len(shown)
            more = f" and {hidden} more (see ListVoices)" if hidden else ""
            raise InvalidInput(f"unknown voice {clip(name)}; available voices: "
                               f"{', '.join(shown)}{more}")
        return voice


def _is_path_name(name: str) -> bool:
    """"vits:/srv/models/x" or "vits:./x": named after a server path."""
    _, _, source = name.partition(":")
    return source.startswith(("/", "~", ".", "\\")) or ":\\" in source
