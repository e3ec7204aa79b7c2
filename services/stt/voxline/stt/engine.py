"""The speech-to-text engine: faster-whisper on audio decoded in memory (no temp files).

Audio bytes are decoded by ``voxline.common.audio.decode`` into mono float32 at 16 kHz and handed
to ``WhisperModel.transcribe`` as a numpy array. Decoding and inference run together in a worker
thread of an executor sized to ``num_workers`` (the number of CTranslate2 workers), behind an
``AdmissionGate``: ``num_workers`` jobs run, ``max_queued`` wait, the rest get LimitExceeded.

Short encoder window (``--encoder-window-s``, whisper.cpp's ``audio_ctx``): faster-whisper pads
every window's mel features to 3000 frames (30 s) right before the encoder, whatever its
``chunk_length``, so a 3 s utterance pays for 30 s of encoder. ``WindowedWhisperModel`` keeps
faster-whisper's whole decoding path (prompt, timestamps, suppressed tokens, no-speech test) and
only cuts those padded features to the window set for the current thread; the CTranslate2 encoder
accepts any even number of frames up to 3000. A result that looks degenerate is redone with the
full window (``run_whisper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voxline.common.admission import AdmissionGate
from voxline.common.audio import WHISPER_RATE, decode
from voxline.common.errors import InvalidInput, NotConfigured, NotReady, clip
from voxline.stt.config import MAX_BEAM_SIZE, EngineSettings, window_for_device
from voxline.stt.models import resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioInput:
    """Encoded audio and how to read it (encoding names as in ``voxline.common.audio``)."""

    data: bytes
    #: "pcm_s16le", "wav", "flac", ...; None sniffs the container.
    encoding: str | None = None
    #: Raw PCM only.
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True)
class RecognitionOptions:
    """Per-request overrides; empty/zero/None take the server's defaults."""

    language: str = ""
    beam_size: int = 0
    vad_filter: bool | None = None


@dataclass(frozen=True)
class Segment:
    """One timed piece of a transcript."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """A transcript and what it cost (milliseconds measured in the worker, queueing excluded)."""

    text: str
    language: str
    language_probability: float
    segments: tuple[Segment, ...]
    audio_seconds: float
    processing_ms: float
    decode_ms: float


class Transcriber(Protocol):
    """What the servicer needs; tests and benchmarks may plug in another implementation."""

    @property
    def max_audio_seconds(self) -> float: ...

    async def warm_up(self) -> None:
        """Load the model and run one transcription; ready to serve when this returns."""

    def check_options(self, options: RecognitionOptions) -> None:
        """Raise InvalidInput for options this engine cannot honour (before any audio arrives)."""

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        """Transcribe a whole clip; waits for a worker (LimitExceeded when the queue is full)."""

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        """Transcribe only if a worker is free right now (best-effort partials); else None."""

    async def close(self) -> None:
        """Release the model and the worker threads."""


#: The cancellation message of a pass superseded by a newer one of its stream (voxline.stt.passes).
SUPERSEDED = "superseded"


def _one_window(audio: AudioInput) -> bool:
    """Raw PCM that fits one 30 s Whisper window (its length is known before decoding)."""
    if audio.encoding != "pcm_s16le" or audio.sample_rate <= 0:
        return False
    return len(audio.data) / (2 * max(audio.channels, 1) * audio.sample_rate) <= 30.0


class PassStopped(Exception):
    """A cancelled transcription stopped at its next segment (nobody waits for its result)."""


async def outlast(job: asyncio.Future[Any]) -> None:
    """Wait until ``job`` is done, however many times the caller is cancelled meanwhile (the caller
    re-raises its own cancellation afterwards); its outcome is retrieved and dropped."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([job])
    if not job.cancelled():
        job.exception()


def resolve_device(device: str) -> str:
    """``--device``: "auto" is "cuda" where CTranslate2 sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def warm_up_clip(seconds: float = 1.0) -> np.ndarray:
    """A quiet tone with a little noise: enough for Whisper to run its encoder and decoder."""
    t = np.arange(int(seconds * WHISPER_RATE), dtype=np.float32) / WHISPER_RATE
    noise = np.random.default_rng(0).normal(0.0, 0.01, t.shape).astype(np.float32)
    return (0.1 * np.sin(2 * np.pi * 220.0 * t) + noise).astype(np.float32)


class WhisperTranscriber:
    """faster-whisper ``WhisperModel`` behind an admission gate and a sized thread pool."""

    def __init__(self, settings: EngineSettings, model: Any = None) -> None:
        """``model``: an already loaded faster-whisper-like model (benchmarks and tests script a
        slow one); warm-up then only runs it once."""
        self._settings = settings
        self._model: Any = model
        self._languages: frozenset[str] = (frozenset(model.supported_languages) if model is not None
                                           else frozenset())
        self._executor = ThreadPoolExecutor(max_workers=settings.num_workers,
                                            thread_name_prefix="stt-worker")
        self._gate = AdmissionGate(settings.num_workers, settings.max_queued, "transcriptions")
        self._running = 0
        self._working: set[asyncio.Task[Any]] = set()  # tasks whose transcription holds a worker
        #: The encoder window in use: ``--encoder-window-s auto`` is resolved by the device at
        #: load; an injected model (a script, a replay) gets the full window unless one is set.
        self._window_s = max(settings.encoder_window_s, 0.0)

    @property
    def encoder_window_s(self) -> float:
        """The encoder window the model runs with, seconds (0: full); known after warm-up."""
        return self._window_s

    @property
    def max_audio_seconds(self) -> float:
        return self._settings.max_audio_seconds

    @property
    def settings(self) -> EngineSettings:
        return self._settings

    @property
    def model(self) -> Any:
        """The loaded ``WhisperModel`` (None before warm-up); for benchmarks."""
        return self._model

    async def warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        if self._model is None:
            await loop.run_in_executor(self._executor, self._load)
        started = time.perf_counter()
        # a fixed language skips detection, which would only run the same encoder a second time
        language = self._settings.language or ("en" if "en" in self._languages else "")
        await loop.run_in_executor(self._executor, self._infer, warm_up_clip(), language, 1, False)
        log.info("model warm", extra={"warm_up_ms": round((time.perf_counter() - started) * 1000, 1)})

    def _load(self) -> None:
        s = self._settings
        resolved = resolve_model(s.model, s.cache_dir)
        device = resolve_device(s.device)
        compute_type = s.compute_type
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        started = time.perf_counter()
        try:
            model = windowed_whisper_model()(resolved.location, device=device,
                                             compute_type=compute_type, cpu_threads=s.cpu_threads,
                                             num_workers=s.num_workers)
        except Exception as exc:  # CTranslate2 / the hub client fail in many ways; all mean "cannot load"
            raise NotConfigured(f"cannot load Whisper model {s.model!r} ({resolved.source}): {exc}") from exc
        languages = frozenset(model.supported_languages)
        if s.language and s.language not in languages:
            raise NotConfigured(f"--language {s.language!r} is not supported by model {s.model!r}")
        self._model, self._languages = model, languages
        self._window_s = window_for_device(s.encoder_window_s, device)
        log.info("model loaded", extra={"model": s.model, "location": resolved.location,
                                        "source": resolved.source, "device": device,
                                        "compute_type": compute_type, "encoder_window_s": self._window_s,
                                        "load_ms": round((time.perf_counter() - started) * 1000, 1)})

    def check_options(self, options: RecognitionOptions) -> None:
        if self._model is None:
            raise NotReady("the speech model is still loading")
        self._resolve_options(options)

    def _resolve_options(self, options: RecognitionOptions) -> tuple[str, int, bool]:
        # "en-US" → "en": Whisper knows languages, not regions
        language = options.language.strip().lower().split("-")[0] or self._settings.language
        if language and language not in self._languages:
            raise InvalidInput(f"unsupported language {clip(language)} for this model")
        beam = options.beam_size or self._settings.beam_size
        if not 1 <= beam <= MAX_BEAM_SIZE:
            raise InvalidInput(f"beam_size must be 0 (server default) or 1..{MAX_BEAM_SIZE}, got {beam}")
        vad = self._settings.vad_filter if options.vad_filter is None else options.vad_filter
        return language, beam, vad

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        if self._model is None:
            raise NotReady("the speech model is still loading")
        resolved = self._resolve_options(options)
        async with self._gate.admit():
            return await self._working_on(audio, resolved)

    def working(self, task: asyncio.Task[Any]) -> bool:
        """Does ``task``'s transcription hold a worker (it has started; not merely queued)?"""
        return task in self._working

    async def _working_on(self, audio: AudioInput, resolved: tuple[str, int, bool]) -> Transcript:
        task = asyncio.current_task()
        if task is not None:
            self._working.add(task)
        try:
            return await self._run(audio, resolved)
        finally:
            self._working.discard(task)  # type: ignore[arg-type]  # None is never in the set

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        if self._model is None or self._running >= self._settings.num_workers or self._gate.waiting:
            return None
        resolved = self._resolve_options(options)
        # a worker is free, so admit() takes its slot without waiting (no await in between)
        async with self._gate.admit():
            return await self._working_on(audio, resolved)

    async def _run(self, audio: AudioInput, resolved: tuple[str, int, bool]) -> Transcript:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        self._running += 1
        try:
            job = loop.run_in_executor(self._executor, self._transcribe_sync, audio, *resolved, stop)
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError as cancelled:
                # The thread cannot be killed: it keeps its slot (this coroutine holds the
                # admission gate) until it really ends, however many times this is cancelled, so
                # running transcriptions never exceed num_workers. It stops at its next segment;
                # a pass superseded by a newer one of its stream (``SUPERSEDED``) whose clip is a
                # single 30 s window would cost as much to stop as to finish: it finishes, and
                # its transcript is returned (the stream may still show it as an interim).
                if not (cancelled.args == (SUPERSEDED,) and _one_window(audio)):
                    stop.set()
                await outlast(job)
                if stop.is_set() or job.cancelled() or job.exception() is not None:
                    raise
                return job.result()
        finally:
            self._running -= 1

    def _transcribe_sync(self, audio: AudioInput, language: str, beam: int, vad: bool,
                         stop: threading.Event | None = None) -> Transcript:
        started = time.perf_counter()
        if stop is not None and stop.is_set():
            raise PassStopped("cancelled before it started")
        decoded = decode(audio.data, audio.encoding, sample_rate=audio.sample_rate,
                         channels=audio.channels, max_seconds=self._settings.max_audio_seconds)
        decoded_at = time.perf_counter()
        text, lang, prob, segments = self._infer(decoded.samples, language, beam, vad, stop)
        finished = time.perf_counter()
        result = Transcript(
            text=text, language=lang, language_probability=prob, segments=segments,
            audio_seconds=decoded.duration_s,
            processing_ms=(finished - started) * 1000.0,
            decode_ms=(decoded_at - started) * 1000.0,
        )
        # figures only: a transcript may be private
        log.info("transcribed", extra={"audio_s": round(result.audio_seconds, 3),
                                       "encoding": decoded.encoding, "language": lang,
                                       "processing_ms": round(result.processing_ms, 1),
                                       "decode_ms": round(result.decode_ms, 2)})
        return result

    def _infer(self, samples: np.ndarray, language: str, beam: int, vad: bool,
               stop: threading.Event | None = None) -> tuple[str, str, float, tuple[Segment, ...]]:
        return run_whisper(self._model, samples, language, beam, vad, self._window_s, stop)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        self._model = None


#: Audio the window keeps after the clip's end, seconds: Whisper was trained on speech followed by
#: more signal or padding, and a window that stops at the last sample tends to lose the final word.
ENCODER_WINDOW_MARGIN_S = 1.0
#: Whisper's fixed window in 10 ms mel frames (30 s): what faster-whisper always encodes.
FULL_WINDOW_FRAMES = 3000
#: faster-whisper's own limit for a repetitive decode (its temperature fallback uses the same 2.4).
COMPRESSION_RATIO_LIMIT = 2.4
#: faster-whisper's own floor for a segment's average token log-probability (its temperature
#: fallback uses the same -1.0). Full-window segments of the benchmark's noisy speech stay above
#: -0.6; the short windows' invented tails ("... London. Now, the") fall below -1.5.
LOG_PROB_LIMIT = -1.0
#: Tokens (text and timestamps) per second of audio that no speech needs (people say 2-4 words a
#: second, 1.3 tokens a word): a short-window decode stops there, and reaching it means a loop.
MAX_TOKENS_PER_SECOND = 12

_window = threading.local()


def encoder_window_frames() -> int:
    """Mel frames the encoder sees in this thread (0: Whisper's full 30 s window)."""
    return int(getattr(_window, "frames", 0))


def window_frames_for(audio_seconds: float, encoder_window_s: float) -> int:
    """The encoder window for a clip, in mel frames: max(audio + margin, ``encoder_window_s``),
    even (the encoder's first convolution has stride 2); 0 when that is the full 30 s anyway or
    ``encoder_window_s`` is 0."""
    if encoder_window_s <= 0:
        return 0
    seconds = max(audio_seconds + ENCODER_WINDOW_MARGIN_S, encoder_window_s)
    frames = math.ceil(seconds * 100)
    frames += frames % 2
    return 0 if frames >= FULL_WINDOW_FRAMES else frames


@contextlib.contextmanager
def _encoder_window(frames: int) -> Iterator[None]:
    previous = encoder_window_frames()
    _window.frames = frames
    try:
        yield
    finally:
        _window.frames = previous


@functools.cache
def windowed_whisper_model() -> type:
    """faster-whisper's ``WhisperModel`` whose encoder sees only ``encoder_window_frames()`` frames
    (when set for the calling thread). Built on first use: importing faster-whisper is slow, and
    ``--help`` should not wait for it."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]  # faster-whisper is untyped
        """``WhisperModel`` with a per-thread encoder window (see ``encoder_window_frames``)."""

        def encode(self, features: np.ndarray) -> Any:
            # generate_segments and detect_language pad each window to 3000 frames first; the
            # padding beyond the window is zeros, so the cut loses no audio of the clip
            frames = encoder_window_frames()
            return super().encode(features[..., :frames] if frames else features)

    return WindowedWhisperModel


def token_cap(audio_seconds: float) -> int:
    """Most tokens a short-window decode may produce for a clip (``MAX_TOKENS_PER_SECOND``, plus
    room for a few segments' timestamps), below Whisper's 448-token context."""
    return min(math.ceil(MAX_TOKENS_PER_SECOND * audio_seconds) + 24, 440)


def degenerate(pieces: tuple[Any, ...], audio_seconds: float) -> str:
    """Why faster-whisper segments look like a decoding failure rather than speech ("" if they
    don't): a repetitive segment (compression ratio over faster-whisper's own 2.4), an unsure one
    (average log-probability under its own -1.0), a segment that repeats the one before, or as
    many tokens as ``token_cap`` allows (a loop cut short)."""
    ratio = max((float(p.compression_ratio) for p in pieces), default=0.0)
    if ratio > COMPRESSION_RATIO_LIMIT:
        return f"compression ratio {ratio:.2f} > {COMPRESSION_RATIO_LIMIT}"
    logprob = min((float(p.avg_logprob) for p in pieces), default=0.0)
    if logprob < LOG_PROB_LIMIT:
        return f"average log-probability {logprob:.2f} < {LOG_PROB_LIMIT}"
    texts = [p.text.strip().lower() for p in pieces]
    if any(a and a == b for a, b in itertools.pairwise(texts)):
        return "a segment repeats the one before"
    tokens = sum(len(p.tokens) for p in pieces)
    if tokens >= token_cap(audio_seconds):
        return f"{tokens} tokens for {audio_seconds:.1f} s of audio"
    return ""


def run_whisper(model: Any, audio: np.ndarray | str, language: str, beam: int, vad: bool,
                encoder_window_s: float = 0.0, stop: threading.Event | None = None
                ) -> tuple[str, str, float, tuple[Segment, ...]]:
    """Run a faster-whisper model on 16 kHz mono float32 samples (or a file path, as the baseline
    did); returns (text, language, language probability, segments). Blocking: call from a worker.

    ``encoder_window_s`` > 0 (samples only, and a model from ``windowed_whisper_model``): encode
    max(audio + 1 s, that) seconds instead of 30, decoding at most ``token_cap`` tokens; a
    degenerate result (``degenerate``) is redone with the full window and logged at DEBUG.

    ``stop``: once set, the run ends before its next segment (``PassStopped``): faster-whisper
    encodes and decodes a 30 s window as its segments are read, so a cancelled pass of a long turn
    stops within one window instead of running to its end."""
    seconds = len(audio) / WHISPER_RATE if isinstance(audio, np.ndarray) else 0.0
    frames = window_frames_for(seconds, encoder_window_s) if seconds else 0
    if frames:
        with _encoder_window(frames):
            # the encoder runs while the segments are iterated: inside the window's scope
            pieces, info = _transcribe(model, audio, language, beam, vad, token_cap(seconds), stop)
        reason = degenerate(pieces, seconds)
        if not reason:
            return _result(pieces, info)
        log.debug("short encoder window result degenerate: redone with the full window",
                  extra={"window_s": frames / 100, "reason": reason})
    return _result(*_transcribe(model, audio, language, beam, vad, None, stop))


def _transcribe(model: Any, audio: np.ndarray | str, language: str, beam: int, vad: bool,
                max_new_tokens: int | None, stop: threading.Event | None = None
                ) -> tuple[tuple[Any, ...], Any]:
    pieces, info = model.transcribe(
        audio,
        language=language or None,
        beam_size=beam,
        vad_filter=vad,
        # one temperature: no fallback ladder (predictable latency), and so no previous-text
        # conditioning either, which could otherwise lock into a repetition loop
        temperature=0.0,
        condition_on_previous_text=False,
        max_new_tokens=max_new_tokens,
    )
    if stop is None:
        return tuple(pieces), info
    read: list[Any] = []
    for piece in pieces:
        read.append(piece)
        if stop.is_set():
            close = getattr(pieces, "close", None)
            if close is not None:  # faster-whisper's generator: the next window is never encoded
                close()
            raise PassStopped(f"stopped after {len(read)} segments")
    if stop.is_set():
        raise PassStopped("stopped")
    return tuple(read), info


def _result(pieces: tuple[Any, ...], info: Any) -> tuple[str, str, float, tuple[Segment, ...]]:
    segments = tuple(Segment(float(p.start), float(p.end), p.text.strip()) for p in pieces)
    text = " ".join(s.text for s in segments if s.text)
    return text, str(info.language), float(info.language_probability), segments
