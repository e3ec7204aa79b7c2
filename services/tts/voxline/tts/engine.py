"""Text → sentence-by-sentence audio, streamed: the work of the TTS service (no grpc here).

``SpeechSynthesizer.plan`` validates a request completely before anything is sent (text, voice,
output format); ``stream`` then speaks the plan one sentence at a time, each synthesis in a worker
thread, and yields each sentence's audio as soon as it exists. The next sentence starts only when
the consumer asks for more, so a consumer that stops (a cancelled call) stops the work: at most the
sentence already running in its thread is finished, none after it.

Cost is bounded for every voice: a sentence longer than ``max_sentence_chars`` is cut at a space
(else exactly there); a request whose audio would pass ``max_audio_seconds`` stops with
LimitExceeded before that audio is sent; voices add their own bounds (Piper: phonemes per sentence).
After a long sentence, freed memory is handed back to the system (``malloc_trim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import sys
import time
import unicodedata
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import numpy as np

from voxline.common.admission import AdmissionGate
from voxline.common.audio import float_to_pcm16, resample, wav_header
from voxline.common.errors import InvalidInput, LimitExceeded, NotReady, clip
from voxline.common.sentences import split_sentences
from voxline.tts.voices import Voice, VoiceBook

log = logging.getLogger(__name__)

#: Output encodings the service can stream (lower-case names, as in voxline.common.audio).
OUTPUT_ENCODINGS = ("pcm_s16le", "wav")
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
#: Characters in one synthesised sentence, and seconds of audio in one request (defaults).
MAX_SENTENCE_CHARS = 200
MAX_AUDIO_SECONDS = 180.0
#: A sentence with more audio than this hands freed memory back to the system afterwards.
_TRIM_AFTER_SECONDS = 10.0
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def release_memory() -> None:
    """Return freed heap memory to the system (glibc keeps it otherwise); no-op elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def bound_sentences(sentences: tuple[str, ...], max_chars: int) -> tuple[str, ...]:
    """Each sentence cut into pieces of at most ``max_chars``, at the last space that keeps the
    piece at least half full, else exactly at the limit (text without spaces)."""
    out: list[str] = []
    for sentence in sentences:
        rest = sentence
        while len(rest) > max_chars:
            cut = rest.rfind(" ", max_chars // 2, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            out.append(rest[:cut].strip())
            rest = rest[cut:].strip()
        if rest:
            out.append(rest)
    return tuple(piece for piece in out if piece)


@dataclass(frozen=True)
class OutputFormat:
    """The format of every audio byte a synthesis streams."""

    encoding: str
    sample_rate: int
    channels: int = 1


@dataclass(frozen=True)
class SynthesisPlan:
    """A validated request: who speaks which sentences, in which format."""

    voice: Voice
    sentences: tuple[str, ...]
    output: OutputFormat


@dataclass(frozen=True)
class AudioPiece:
    """Some audio of one sentence; ``sentence`` is set on the sentence's first piece only."""

    sentence_index: int
    sentence: str
    data: bytes


@dataclass(frozen=True)
class SynthesisOutcome:
    """How one synthesis ended, for logs, tests and benchmarks."""

    voice: str
    sentences_total: int
    sentences_synthesised: int
    audio_seconds: float
    #: Time spent inside ``Voice.synthesize``, summed over sentences.
    synthesis_seconds: float
    #: From the start of the stream to its first audio piece (None: no audio was produced).
    first_audio_seconds: float | None
    #: From the start of the stream to its end.
    total_seconds: float
    #: The consumer stopped before the last sentence was sent.
    cancelled: bool


def _render(voice: Voice, sentence: str, rate: int) -> tuple[bytes, float, int]:
    """Worker thread: speak, resample, encode. Returns (pcm16 bytes, synthesis seconds, samples)."""
    started = time.perf_counter()
    count = 0
    try:
        samples = voice.synthesize(sentence)
        seconds = time.perf_counter() - started
        samples = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1))
        samples = resample(samples, voice.sample_rate, rate)
        count = len(samples)
        pcm = float_to_pcm16(samples)
        del samples
    finally:
        # a long synthesis (or a failed one) leaves large freed buffers behind
        if count > _TRIM_AFTER_SECONDS * rate or time.perf_counter() - started > 1.0:
            release_memory()
    return pcm, seconds, count


class SpeechSynthesizer:
    """Validates requests and streams their audio sentence by sentence."""

    def __init__(
        self,
        voices: VoiceBook | None = None,
        *,
        max_text_chars: int = 5000,
        chunk_bytes: int = 32 * 1024,
        max_active: int = 2,
        max_queued: int = 16,
        on_finished: Callable[[SynthesisOutcome], None] | None = None,
        max_sentence_chars: int = MAX_SENTENCE_CHARS,
        max_audio_seconds: float = MAX_AUDIO_SECONDS,
    ) -> None:
        if chunk_bytes < 64 or chunk_bytes % 2:
            raise ValueError("chunk_bytes must be an even number >= 64")
        self._voices = voices
        self.max_text_chars = max_text_chars
        self.chunk_bytes = chunk_bytes
        self.max_sentence_chars = max_sentence_chars
        self.max_audio_seconds = max_audio_seconds
        self._gate = AdmissionGate(max_active, max_queued, what="syntheses")
        self._on_finished = on_finished
        #: Sentences synthesised since start, all requests together.
        self.sentences_synthesised = 0

    @property
    def voices(self) -> VoiceBook:
        """The loaded voices; NotReady while they are still loading."""
        if self._voices is None:
            raise NotReady("the voices are still loading; retry shortly")
        return self._voices

    def set_voices(self, voices: VoiceBook) -> None:
        """Install the loaded voices (the server turns SERVING after this)."""
        self._voices = voices

    def admit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a synthesis slot for a whole stream; LimitExceeded when too many are waiting."""
        return self._gate.admit()

    def plan(self, text: str, voice: str = "", encoding: str = "pcm_s16le", sample_rate: int = 0,
             channels: int = 0) -> SynthesisPlan:
        """Validate a request. InvalidInput / LimitExceeded name the problem; nothing is synthesised."""
        if not text or not text.strip():
            raise InvalidInput("the text is empty: nothing to say")
        if len(text) > self.max_text_chars:
            raise LimitExceeded(
                f"the text is {len(text)} characters long; the limit is {self.max_text_chars}"
            )
        for index, char in enumerate(text):
            if char not in _ALLOWED_CONTROLS and unicodedata.category(char) in ("Cc", "Cs"):
                raise InvalidInput(f"the text holds control character U+{ord(char):04X} at "
                                   f"position {index}: send plain text")
        chosen = self.voices.get(voice)
        if encoding not in OUTPUT_ENCODINGS:
            raise InvalidInput(
                f"unsupported output encoding {clip(encoding)}; supported: "
                f"{', '.join(e.upper() for e in OUTPUT_ENCODINGS)}"
            )
        if channels not in (0, 1):
            raise InvalidInput(f"only mono output is supported (channels 0 or 1), got {channels}")
        if sample_rate != 0 and not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise InvalidInput(
                f"output sample_rate_hz {sample_rate} is out of range: 0 (the voice's native "
                f"{chosen.sample_rate} Hz) or {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}"
            )
        sentences = bound_sentences(tuple(split_sentences(text)), self.max_sentence_chars)
        if not sentences:
            raise InvalidInput("the text holds no sentence to say")
        rate = sample_rate or chosen.sample_rate
        return SynthesisPlan(chosen, sentences, OutputFormat(encoding, rate, 1))

    async def stream(self, plan: SynthesisPlan) -> AsyncGenerator[AudioPiece, None]:
        """Speak the plan's sentences in order, yielding each one's audio as soon as it is ready.

        Close the generator (or cancel its consumer) to stop: no later sentence is started.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_audio: float | None = None
        synth_seconds = 0.0
        done = samples_out = 0
        completed = False
        header = wav_header(plan.output.sample_rate) if plan.output.encoding == "wav" else b""
        max_samples = int(self.max_audio_seconds * plan.output.sample_rate)
        try:
            for index, sentence in enumerate(plan.sentences):
                pcm, seconds, count = await asyncio.to_thread(
                    _render, plan.voice, sentence, plan.output.sample_rate)
                if samples_out + count > max_samples:
                    del pcm
                    raise LimitExceeded(
                        f"the audio would pass {self.max_audio_seconds:g} s at sentence {index + 1} "
                        f"of {len(plan.sentences)}; the limit is {self.max_audio_seconds:g} s per "
                        "request: send shorter text")
                done += 1
                self.sentences_synthesised += 1
                synth_seconds += seconds
                samples_out += count
                payload, header = header + pcm, b""
                for offset in range(0, len(payload), self.chunk_bytes):
                    if first_audio is None:
                        first_audio = loop.time() - started
                    yield AudioPiece(index, sentence if offset == 0 else "",
                                     payload[offset:offset + self.chunk_bytes])
            completed = True
        finally:
            outcome = SynthesisOutcome(
                voice=plan.voice.name,
                sentences_total=len(plan.sentences),
                sentences_synthesised=done,
                audio_seconds=samples_out / plan.output.sample_rate,
                synthesis_seconds=synth_seconds,
                first_audio_seconds=first_audio,
                total_seconds=loop.time() - started,
                cancelled=not completed,
            )
            self._finished(outcome)

    def _finished(self, outcome: SynthesisOutcome) -> None:
        log.info("synthesis cancelled" if outcome.cancelled else "synthesis done", extra={
            "voice": outcome.voice,
            "sentences": f"{outcome.sentences_synthesised}/{outcome.sentences_total}",
            "audio_s": round(outcome.audio_seconds, 3),
            "synthesis_ms": round(outcome.synthesis_seconds * 1000, 1),
            "first_audio_ms": (None if outcome.first_audio_seconds is None
                               else round(outcome.first_audio_seconds * 1000, 1)),
        })
        if self._on_finished is not None:
            self._on_finished(outcome)
