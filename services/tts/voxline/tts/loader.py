"""Build the configured voices and warm them up (blocking: run it in a worker thread)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from voxline.common.config import ConfigError
from voxline.tts.config import TtsConfig
from voxline.tts.espeak import EspeakVoice
from voxline.tts.piper_voice import PiperVoice
from voxline.tts.vits import VitsVoice
from voxline.tts.voices import WARM_UP_TEXT, Voice, VoiceBook

log = logging.getLogger(__name__)


def load_voices(config: TtsConfig) -> VoiceBook:
    """Load every configured voice (espeak, then vits, then piper) and say one sentence with each.

    The VITS path is the same for a hub id (facebook/mms-tts-fra) and a local directory.
    Raises ConfigError naming the voice that could not be loaded.
    """
    builders: list[tuple[str, Callable[[], Voice]]] = []
    for name in config.espeak_voices:
        builders.append((f"espeak:{name}", functools.partial(EspeakVoice, name)))
    for model in config.vits_models:
        builders.append((f"vits:{model}", functools.partial(
            VitsVoice.load, model, device=config.vits_device, allow_download=config.allow_downloads)))
    for name in config.piper_voices:
        builders.append((f"piper:{name}", functools.partial(
            PiperVoice.load, name, max_phonemes_per_call=config.max_phonemes_per_call,
            max_sentence_phonemes=config.max_sentence_phonemes)))
    voices: list[Voice] = []
    for label, build in builders:
        try:
            voices.append(build())
        except ValueError as exc:
            raise ConfigError(f"cannot load voice {label}: {exc}") from exc
    book = VoiceBook(voices, default=config.default_voice)
    for voice in book:
        warm_up(voice)
    return book


def warm_up(voice: Voice) -> None:
    """Say one short sentence, so the first request does not pay for lazy initialisation."""
    started = time.perf_counter()
    samples = voice.synthesize(WARM_UP_TEXT)
    log.info("voice ready", extra={"voice": voice.name, "sample_rate": voice.sample_rate,
                                   "warm_up_ms": round((time.perf_counter() - started) * 1000, 1),
                                   "warm_up_samples": len(samples)})
