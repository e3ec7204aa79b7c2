"""The Listen stream: a conversation's microphone audio in; voice activity, transcripts and turns out.

One stream lasts a whole conversation. Each chunk of raw PCM is judged by the ``Endpointer`` (in a
worker thread) as it arrives. Its events go out at once, and the recogniser works while the user
speaks instead of after:

- while speech goes on, an interim transcript of the turn so far every ``interim_interval_s`` of
  new audio, best effort (only when a Whisper worker is idle, as StreamingTranscribe's partials);
- at each pause, a transcript of all of the turn's speech (``at_pause``): the text a reply can be
  started on before the turn has even ended. It goes out at once; then its words are read
  (``read_words``, in a worker thread: ``text_turn.WordsJudge``'s language model takes ~35 ms) and
  may veto the voice's "complete": a new ``SpeechPaused`` with the longer limit, and a turn end that
  was waiting for them is withdrawn (the turn ends later, on the same transcript);
- when the turn ends, ``TurnEnded`` with the final transcript. When nothing was said since the
  pause, that is the pause's transcript: the end of a turn costs no second decode.

Work started for an older *epoch* (speech resumed since) is stale: its pass is dropped if it has
not started, and a newer pass supersedes it (stopped at its next segment; ``voxline.stt.passes``);
a stale pause transcript that was ready anyway goes out as a plain interim, and an end of turn whose speech
resumed before its transcript was ready is dropped — the turn goes on, and ends later with
everything that was said. A stream has at most one pass waiting for or holding a worker.

What a stream may cost is bounded (``LiveLimits``): a declared rate under ``min_rate_hz`` is
refused, a chunk longer than a turn is refused before it is read, chunks are read a second at a time
(a large one never becomes a large float array), audio kept is one turn at most (in seconds of the
stream's own rate and channels), the audio's pace beyond a burst and the messages per second of
audio are capped, and its optional passes spend a budget of recognition time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from voxline.common.errors import InvalidInput, LimitExceeded, VoxlineError
from voxline.stt.config import LiveLimits
from voxline.stt.endpoint import (
    RATE,
    Endpointer,
    EndpointEvent,
    PauseDetected,
    SpeechPaused,
    SpeechStarted,
    TurnEnded,
)
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcriber, Transcript
from voxline.stt.passes import StreamPasses
from voxline.stt.stream import StreamFormat
from voxline.stt.text_turn import text_complete_probability

log = logging.getLogger(__name__)


class EndTurn:
    """Request: the client marks the end of the turn."""


class ReplyStarted:
    """Request: the assistant started to answer; further speech is a new turn."""


ListenRequest = bytes | EndTurn | ReplyStarted


@dataclasses.dataclass(frozen=True)
class Interim:
    """A transcript of the turn so far."""

    turn: int
    transcript: Transcript
    audio_end_s: float
    at_pause: bool


@dataclasses.dataclass(frozen=True)
class Final:
    """The turn ended: its end-of-speech decision and the transcript of all its speech."""

    ended: TurnEnded
    transcript: Transcript


ListenEvent = SpeechStarted | SpeechPaused | Interim | Final


class RecognitionCost:
    """What a transcription costs on this server (a moving average of its processing time, ms),
    shared by its Listen streams. A pause transcript started at the early pause (before the pause
    is certain) wins ``pause_ms - early_pause_ms`` when the pause is real, and when it was only a
    gap between words it occupies a worker for nothing: with Whisper's full window on a 2-core CPU
    (~1.1–1.5 s a pass), that stale pass delayed the turn's real transcript by up to a second
    ("…while I cook dinner.": 3092 ms on the benchmark's path (c) against 1596 for the oracle). So
    the early start is kept for a recogniser that costs at most ``early_max_ms``; a slower one
    starts at the pause. At ~0.4 s a pass (``--encoder-window-s 10``) the early start still pays:
    path (c) 1092 → 991 ms, no turn split."""

    #: Slowest recogniser that still starts transcribing at the early pause, ms (the default).
    EARLY_MAX_MS = 600.0

    def __init__(self, early_max_ms: float = EARLY_MAX_MS) -> None:
        self.ms: float | None = None
        self.early_max_ms = early_max_ms

    def add(self, processing_ms: float) -> None:
        self.ms = processing_ms if self.ms is None else 0.5 * self.ms + 0.5 * processing_ms

    @property
    def early_start_pays(self) -> bool:
        return self.ms is None or self.ms <= self.early_max_ms


@dataclasses.dataclass
class _Job:
    kind: str  # "interim" | "pause" | "words" (reading a pause transcript) | "final"
    turn: int
    epoch: int
    audio_end_s: float
    ended: TurnEnded | None = None  # the end of turn waiting for this transcript (or its words)
    transcript: Transcript | None = None  # "words": the pause transcript being read


class PcmToModelRate:
    """Raw PCM s16le chunks → mono float32 at 16 kHz, chunk by chunk (linear interpolation across
    chunk boundaries: plenty for a VAD and the turn model; Whisper gets the original bytes)."""

    def __init__(self, rate: int, channels: int) -> None:
        self._rate, self._channels = rate, max(channels, 1)
        self._step = rate / RATE
        # Position of the next output sample in ``[last sample of the previous chunk, *chunk]``.
        self._at = 1.0
        self._last = np.zeros(1, dtype=np.float32)

    def __call__(self, data: bytes) -> np.ndarray:
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._channels > 1:
            x = x.reshape(-1, self._channels).mean(axis=1)
        if self._rate == RATE or not len(x):
            return np.asarray(x, dtype=np.float32)
        joined = np.concatenate([self._last, x])
        positions = np.arange(self._at, len(joined) - 1 + 1e-9, self._step)
        out = np.interp(positions, np.arange(len(joined)), joined).astype(np.float32)
        self._at = (positions[-1] + self._step if len(positions) else self._at) - len(x)
        self._last = joined[-1:]
        return np.asarray(out, dtype=np.float32)


def mono_pcm(data: bytes, channels: int) -> bytes:
    """Interleaved s16le frames downmixed to mono by the mean of the channels, as the decoder does."""
    if channels <= 1:
        return data
    frames = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return bytes(np.round(frames.mean(axis=1)).astype("<i2").tobytes())


async def listen_stream(
    engine: Transcriber,
    endpointer: Endpointer,
    fmt: StreamFormat,
    options: RecognitionOptions,
    requests: AsyncIterator[ListenRequest],
    *,
    interim_interval_s: float,
    max_turn_seconds: float,
    run_blocking: Callable[..., Any] = asyncio.to_thread,
    cost: RecognitionCost | None = None,
    read_words: Callable[[str, str], float | None] = text_complete_probability,
    limits: LiveLimits | None = None,
    passes: StreamPasses | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ListenEvent]:
    """Yield the stream's events in order until the requests end and every transcript is out.
    ``cost``: the server's ``RecognitionCost`` (shared by its streams; default: this stream's own).
    ``read_words(text, language)``: the words' P(complete) of a pause transcript, or None (blocking:
    it runs in ``run_blocking`` once the transcript has gone out). ``limits``: what the stream may
    cost (default: ``LiveLimits()``); ``passes``: its recognition passes (default: built from
    ``limits``; pass one to read its counts)."""
    if not fmt.is_pcm:
        raise InvalidInput("Listen needs raw PCM (PCM_S16LE with sample_rate_hz): it hears a microphone")
    fmt.validate()
    limits = limits or LiveLimits()
    if fmt.sample_rate < limits.min_rate_hz:
        raise InvalidInput(f"sample rate {fmt.sample_rate} Hz is under {limits.min_rate_hz} Hz, the "
                           "lowest a Listen stream may use")
    engine.check_options(options)
    passes = passes or StreamPasses(limits.recognition_budget, limits.recognition_burst_s)
    # a recogniser that can tell whether a pass holds a worker (WhisperTranscriber) keeps a stale
    # pass that already runs (its transcript still goes out as an interim)
    started: Callable[[asyncio.Task[Any]], bool] | None = getattr(engine, "working", None)
    bytes_per_s = fmt.frame_bytes * fmt.sample_rate  # on the wire
    slice_bytes = bytes_per_s  # one second: a chunk is read in these
    # the turn is kept downmixed to mono (what the recogniser's decoder makes of it anyway): at
    # 48 kHz x 8 channels a 120 s turn is 11.5 MB instead of 92
    kept_per_s = 2 * fmt.sample_rate
    started_at = clock()
    messages = 0
    to_model = PcmToModelRate(fmt.sample_rate, fmt.channels)
    audio = bytearray()  # raw PCM from stream second ``base_s``
    base_s = 0.0
    received_s = 0.0
    last_interim_s = 0.0
    jobs: dict[asyncio.Task[Any], _Job] = {}
    pause_result: tuple[int, Transcript] | None = None  # (epoch, transcript) of the last pause
    cost = cost or RecognitionCost()
    deferred: PauseDetected | None = None  # an early pause whose transcript waits for the pause

    def clip(start_s: float, end_s: float) -> AudioInput:
        first = max(0, int((start_s - base_s) * kept_per_s))
        first -= first % 2
        last = int((end_s - base_s) * kept_per_s)
        last -= last % 2
        return AudioInput(bytes(audio[first:last]), fmt.encoding, fmt.sample_rate, 1)

    def start_job(job: _Job, idle_only: bool = False) -> None:
        """Start a pass (it supersedes the stream's older one); an optional one only within budget."""
        if job.kind != "final" and not passes.affordable():
            log.debug("optional transcript skipped: the stream's recognition budget is spent",
                      extra={"kind": job.kind})
            return
        data = clip(endpointer.turn_start_s, job.audio_end_s)
        work = engine.transcribe_if_idle(data, options) if idle_only else engine.transcribe(data, options)
        jobs[passes.submit(work, job.epoch, interim=idle_only)] = job

    def start_pause_job(event: PauseDetected) -> None:
        nonlocal deferred
        deferred = None
        for task, job in jobs.items():  # an older pause's words are not wanted any more
            if job.kind == "words":
                task.cancel()
        start_job(_Job("pause", event.turn, event.epoch, received_s))

    def start_deferred() -> None:
        """The pause is certain now (same epoch): start the transcript an early pause deferred."""
        if deferred is not None and deferred.epoch == endpointer.epoch:
            start_pause_job(deferred)

    def on_endpoint(events: list[EndpointEvent]) -> list[ListenEvent]:
        nonlocal pause_result, last_interim_s, deferred
        out: list[ListenEvent] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                passes.drop_stale(event.epoch, started)
                out.append(event)
                last_interim_s = received_s
                deferred = None  # it was a gap between words
            elif isinstance(event, PauseDetected):  # transcribe at once; the judgement comes next
                if event.early and not cost.early_start_pays:
                    deferred = event
                else:
                    start_pause_job(event)
            elif isinstance(event, SpeechPaused):
                start_deferred()
                out.append(event)
            elif pause_result is not None and pause_result[0] == event.epoch:
                out.append(Final(event, pause_result[1]))
            else:
                waiting = [j for j in jobs.values()
                           if j.kind in ("pause", "words") and j.epoch == event.epoch]
                if waiting:
                    waiting[0].ended = event
                else:
                    deferred = None
                    start_job(_Job("final", event.turn, event.epoch, received_s, event))
        return out

    def on_job(task: asyncio.Task[Any], job: _Job) -> list[ListenEvent]:
        if task.cancelled():
            return []
        current = job.epoch == endpointer.epoch and job.turn == endpointer.turn
        if job.kind == "words":
            return on_words(task, job) if current else []
        try:
            result = task.result()
        except VoxlineError as exc:
            if job.kind == "interim":
                log.debug("interim transcript skipped", extra={"reason": str(exc)})
                return []
            raise
        if result is None:
            return []
        cost.add(result.processing_ms)
        passes.spend(result.processing_ms / 1000.0)
        out: list[ListenEvent] = []
        if job.kind == "pause":
            out.append(Interim(job.turn, result, job.audio_end_s, at_pause=current))
            if current:  # its words are read next; an end waiting for the transcript waits for them
                words = run_blocking(read_words, result.text, result.language)
                jobs[asyncio.ensure_future(words)] = dataclasses.replace(job, kind="words",
                                                                         transcript=result)
                return out
        elif job.kind == "interim":
            out.append(Interim(job.turn, result, job.audio_end_s, at_pause=False))
        if job.ended is not None and current and not endpointer.turn_open:
            out.append(Final(job.ended, result))
        return out

    def on_words(task: asyncio.Task[Any], job: _Job) -> list[ListenEvent]:
        nonlocal pause_result
        assert job.transcript is not None
        try:
            probability: float | None = task.result()
        except Exception as exc:  # a failing text model costs its opinion, not the conversation
            log.warning("the pause transcript's words could not be read", extra={"error": repr(exc)})
            probability = None
        pause_result = (job.epoch, job.transcript)
        # the words may veto the voice's "complete", and withdraw a turn end waiting for them
        out: list[ListenEvent] = list(endpointer.judge_text(job.epoch, probability))
        if job.ended is not None and not endpointer.turn_open:
            out.append(Final(job.ended, job.transcript))
        return out

    def trim() -> None:
        """Keep the turn's audio (from its start, pre-roll included); otherwise only the last second."""
        nonlocal base_s
        keep_from = endpointer.turn_start_s if endpointer.holds_turn else received_s - 1.0
        if keep_from > base_s + 1.0:
            drop = int((keep_from - base_s) * kept_per_s)
            drop -= drop % 2
            del audio[:drop]
            base_s += drop / kept_per_s
        if received_s - base_s > max_turn_seconds:
            raise LimitExceeded(f"a turn is longer than {max_turn_seconds:g} s of audio (the limit)")

    def check_pace(audio_s: float, count: int) -> None:
        """The audio's pace (``max_speed`` beyond ``burst_s``) and its messages per second of audio."""
        ahead_s = audio_s - limits.max_speed * (clock() - started_at)
        if ahead_s > limits.burst_s:
            raise LimitExceeded(f"audio arrives faster than {limits.max_speed:g}x real time (beyond "
                                f"{limits.burst_s:g} s ahead, the limit)")
        if (limits.min_chunk_ms > 0
                and count > LiveLimits.CHUNK_SLACK + audio_s * 1000.0 / limits.min_chunk_ms):
            raise LimitExceeded(f"{count} messages for {audio_s:.2f} s of audio: chunks must hold "
                                f"{limits.min_chunk_ms:g} ms of audio on average (the limit)")

    async def settle(events: list[EndpointEvent]) -> AsyncIterator[ListenEvent]:
        """What the endpointer's events lead to (the pause transcript starts before the judgement
        runs), then the audio no longer needed is let go."""
        ready = on_endpoint(events)
        if endpointer.judgement_due:
            start_deferred()
            ready += on_endpoint(await run_blocking(endpointer.judge))
        for event in ready:
            yield event
        trim()

    def continue_interims() -> None:
        nonlocal last_interim_s
        if (interim_interval_s > 0 and endpointer.speaking
                and received_s - last_interim_s >= interim_interval_s and not passes.live):
            last_interim_s = received_s
            start_job(_Job("interim", endpointer.turn, endpointer.epoch, received_s), idle_only=True)

    receive: asyncio.Future[ListenRequest] | None = asyncio.ensure_future(anext(requests))
    try:
        while receive is not None or jobs:
            waiting: set[asyncio.Future[Any]] = set(jobs)
            if receive is not None:
                waiting.add(receive)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in jobs if t in done]:
                for event in on_job(task, jobs.pop(task)):
                    yield event
            if receive is None or receive not in done:
                continue
            try:
                request = receive.result()
            except StopAsyncIteration:
                receive = None
                for event in on_endpoint(endpointer.finish()):
                    yield event
                continue
            receive = asyncio.ensure_future(anext(requests))
            messages += 1
            if isinstance(request, EndTurn):
                events = endpointer.end_turn()
            elif isinstance(request, ReplyStarted):
                endpointer.reply_started()
                events = []
            else:
                if len(request) % fmt.frame_bytes:
                    raise InvalidInput(f"audio chunk of {len(request)} bytes is not whole "
                                       f"{fmt.channels or 1}-channel 16-bit frames")
                chunk_s = len(request) / bytes_per_s
                if chunk_s > max_turn_seconds:
                    raise LimitExceeded(f"an audio chunk of {chunk_s:.0f} s is longer than a turn may "
                                        f"be ({max_turn_seconds:g} s of audio, the limit)")
                check_pace(received_s + chunk_s, messages)
                for first in range(0, len(request), slice_bytes):  # a second at a time
                    piece = request[first:first + slice_bytes]
                    audio += mono_pcm(piece, fmt.channels)
                    received_s += len(piece) / bytes_per_s
                    passes.earn(len(piece) / bytes_per_s)
                    async for event in settle(await run_blocking(endpointer.feed, to_model(piece))):
                        yield event
                continue_interims()
                continue
            check_pace(received_s, messages)
            async for event in settle(events):
                yield event
            continue_interims()
    finally:
        owned: list[asyncio.Future[Any]] = list(jobs)
        if receive is not None:
            owned.append(receive)
        for pending in owned:
            pending.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
