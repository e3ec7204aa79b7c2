"""Server VAD: turn-taking over the STT service's Listen stream, with speculative replies.

The user's audio goes to STT as it arrives (``feed``). The stream answers with voice activity,
interim transcripts and ends of turns; this class turns them into replies:

- **Speculation.** At a pause, once the transcript of everything said so far is ready, the reply
  starts at once (LLM, and TTS of its first sentence) with its events held back (``ReplyControl``).
  When the turn ends on that same transcript (a *hit*), the held audio goes out immediately.
- **Continuation.** Speech that resumes before any reply audio was sent belongs to the same turn:
  the reply in progress, speculative or already committed, is cancelled (in the services: its LLM
  and TTS calls end) and counted as a *miss*; the turn ends later with the whole transcript.
- **Barge-in** happens only once the assistant is audible: the first reply audio tells STT
  (``ReplyStartedSignal``) that further speech is a new turn, which then cancels the reply.
- **Failover.** A Listen stream that fails as UNAVAILABLE (its STT replica died or is draining) is
  opened again — through the balanced channel, so on another replica — and replayed the audio since
  the last turn boundary (the moment a reply became audible), so the turn in progress is heard
  whole: no user turn is lost. A reply not yet audible is redone on the new stream's transcript.
- **The honest clock.** STT reports the end of speech as a position in the stream (the last voiced
  frame); the arrival time of the chunk that held it converts it to this process's clock, so
  ``end_of_speech_to_first_audio_ms`` includes the silence waited and every delay after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from voxline.common.errors import LimitExceeded
from voxline.orchestrator.domain import (
    EndTurnSignal,
    InterimText,
    ListenInput,
    ReplyStartedSignal,
    SpeechPause,
    SpeechStart,
    StageClients,
    StageError,
    Transcription,
    TurnDetection,
    TurnEnd,
)
from voxline.orchestrator.events import Event, InterimTranscriptEvent, SessionSettings
from voxline.orchestrator.reply_control import ReplyControl, Speculation
from voxline.orchestrator.turn import TurnInput

log = logging.getLogger(__name__)

#: Chunks (and signals) waiting to be sent to STT; a microphone's 20 ms chunks: ~5 s.
INPUT_QUEUE = 256
#: Audio kept for replaying the current user turn into a new Listen stream after a failure (at most
#: this many seconds of the stream's format; older audio is dropped first).
REPLAY_SECONDS = 120
#: Failures of a Listen stream that reopen it; more in a row (no event in between) end the session.
LISTEN_REOPENS = 2
#: Listen failures after which the stream is reopened on another replica: the replica went away.
#: (A client-streaming call whose server dies mid-write often reports INTERNAL "Internal error
#: from Core" rather than UNAVAILABLE; bad input — INVALID_ARGUMENT, RESOURCE_EXHAUSTED — is not
#: retried, and a failure that repeats ends the session after LISTEN_REOPENS tries.)
_REOPEN_CODES = frozenset({"UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN"})
#: The end of the input (half-close) in the input log.
_CLOSE = object()
#: Arrival times kept for the clock: the last ~60 s of 20 ms chunks.
CLOCK_CHUNKS = 3000


@dataclasses.dataclass
class _Attempt:
    """One reply started for the current user turn."""

    control: ReplyControl
    text: str
    task: asyncio.Task[None]


class StreamClock:
    """Stream seconds (audio received) → perf_counter of their arrival."""

    def __init__(self, bytes_per_second: int) -> None:
        self._bytes_per_second = bytes_per_second
        self._received = 0
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque(maxlen=CLOCK_CHUNKS)

    def add(self, nbytes: int, at: float) -> None:
        self._received += nbytes
        self._arrivals.append((self._received / self._bytes_per_second, at))

    def when(self, stream_s: float) -> float | None:
        """When the audio at ``stream_s`` was spoken, as this process saw it: the arrival of the chunk
        holding it, minus the audio after it in that chunk (None before any audio)."""
        for end_s, at in self._arrivals:
            if end_s >= stream_s:
                return at - (end_s - stream_s)
        return None


class TurnTaker:
    """One session's server-VAD turns. ``run`` is the Listen loop; the session feeds it audio."""

    def __init__(self, stages: StageClients, settings: SessionSettings, emit: Callable[[Event], None], *,
                 start_turn: Callable[[TurnInput], Awaitable[asyncio.Task[None]]],
                 cancel_turn: Callable[[], Awaitable[None]], last_turn: Callable[[], int],
                 default_silence_ms: int) -> None:
        self._stages = stages
        self._settings = settings
        self._emit = emit
        self._start_turn = start_turn
        self._cancel_turn = cancel_turn
        self._last_turn = last_turn
        fmt = settings.input_format
        self._bytes_per_second = 2 * max(fmt.channels, 1) * fmt.sample_rate_hz
        self._clock = StreamClock(self._bytes_per_second)
        # The input log: every input in order, as (index, item). The current Listen stream reads it
        # at its own cursor (``_sent``); what comes after the last turn boundary stays for a replay.
        self._log: collections.deque[tuple[int, object]] = collections.deque()
        self._log_bytes = 0
        self._next_index = 0
        self._sent = 0
        self._generation = 0
        self._added = asyncio.Event()
        self._taken = asyncio.Event()
        self._detection = TurnDetection(settings.turn_detector, settings.turn_complete_silence_ms,
                                        settings.turn_incomplete_silence_ms,
                                        settings.vad_silence_ms or default_silence_ms)
        self._stt_turn = 0  # the STT stream's number of the current user turn
        self._number = 0  # the session's number for it
        self._speculation = Speculation()
        self._attempt: _Attempt | None = None
        self._reuse_number = False

    # ---- from the session ----------------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        """A chunk of the user's audio (waits while STT is behind: the backlog is bounded)."""
        await self._put((data, time.perf_counter()))

    async def end_turn(self) -> None:
        """The client marked the end of the utterance."""
        await self._put(EndTurnSignal())

    def reply_started(self) -> None:
        """A reply became audible (also a typed turn's): next speech is a new turn."""
        if self._backlog() >= INPUT_QUEUE:
            raise LimitExceeded("the speech recogniser is not keeping up with the audio")
        self._append(ReplyStartedSignal())

    async def close(self) -> None:
        """No more audio: the stream ends once STT has finished the last turn."""
        await self._put(_CLOSE)

    # ---- the input log -------------------------------------------------------------------------
    def _backlog(self) -> int:
        return self._next_index - self._sent

    async def _put(self, item: object) -> None:
        while self._backlog() >= INPUT_QUEUE:
            self._taken.clear()
            await self._taken.wait()
        self._append(item)

    def _append(self, item: object) -> None:
        self._log.append((self._next_index, item))
        self._next_index += 1
        if isinstance(item, tuple):
            self._log_bytes += len(item[0])
            # keep at most REPLAY_SECONDS of audio, dropping only what STT already has
            while (self._log_bytes > REPLAY_SECONDS * self._bytes_per_second and self._log
                   and self._log[0][0] < self._sent):
                self._forget_oldest()
        self._added.set()

    def _forget_oldest(self) -> None:
        _, old = self._log.popleft()
        if isinstance(old, tuple):
            self._log_bytes -= len(old[0])

    # ---- the Listen loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forward the audio and act on STT's events until the stream ends. A stream that fails as
        UNAVAILABLE is reopened (another replica) and replayed; StageError when that fails too."""
        failures = 0
        while True:
            heard = [False]
            try:
                await self._listen(heard)
                return
            except StageError as exc:
                failures = 1 if heard[0] else failures + 1
                if exc.code_name not in _REOPEN_CODES or failures > LISTEN_REOPENS:
                    raise
                log.warning("speech recogniser stream failed; reopening it and replaying the turn",
                            extra={"turn": self._number, "code": exc.code_name, "attempt": failures})
            await self._prepare_reopen()
            await asyncio.sleep(0.05 * failures)  # the balancer's view of the dead replica settles

    async def _prepare_reopen(self) -> None:
        """Before a new stream: a reply not yet audible is cancelled (the new stream's turn end
        redoes it), and the new stream's first turn keeps this turn's number unless a reply was
        already heard (then its speech is a new turn, as it would have been)."""
        attempt = self._attempt
        audible = attempt is not None and attempt.control.first_audio_at is not None
        if attempt is not None and not audible:
            await self._drop(attempt)
        self._reuse_number = self._number > 0 and not audible
        self._stt_turn = -1

    async def _listen(self, heard: list[bool]) -> None:
        fmt = self._settings.input_format
        self._generation += 1
        events = self._stages.listen(self._requests(self._generation), fmt, self._settings.language,
                                     self._detection)
        async with contextlib.aclosing(events):
            async for event in events:
                heard[0] = True
                if isinstance(event, SpeechStart):
                    await self._on_speech(event)
                elif isinstance(event, SpeechPause):
                    pass  # the judgement: STT ends the turn itself (speculation starts on at_pause)
                elif isinstance(event, InterimText):
                    await self._on_interim(event)
                elif isinstance(event, TurnEnd):
                    await self._on_end(event)

    async def _requests(self, generation: int) -> AsyncIterator[ListenInput]:
        """The inputs from the oldest one kept (a replay, after a failure) onwards. A stream that was
        replaced stops without taking anything: gRPC may still hold its iterator."""
        cursor = self._log[0][0] if self._log else self._next_index
        self._sent = cursor
        self._clock = StreamClock(self._bytes_per_second)  # stream time starts again at 0
        while generation == self._generation:
            if cursor == self._next_index:
                self._added.clear()
                await self._added.wait()
                continue
            item = self._log[cursor - self._log[0][0]][1]
            cursor = self._sent = cursor + 1
            self._taken.set()
            if item is _CLOSE:
                return
            if isinstance(item, ReplyStartedSignal):  # a turn boundary: no replay before it
                while self._log and self._log[0][0] < cursor:
                    self._forget_oldest()
                yield item
            elif isinstance(item, tuple):
                data, arrived = item
                self._clock.add(len(data), arrived)
                yield data
            else:
                assert isinstance(item, EndTurnSignal)
                yield item

    async def _on_speech(self, event: SpeechStart) -> None:
        attempt = self._attempt
        if event.continues_turn and event.turn == self._stt_turn:
            # the user goes on: whatever reply was started for this turn is premature
            if attempt is None:
                return
            if attempt.control.first_audio_at is None:
                await self._drop(attempt)
                return
            # already audible (STT had not yet heard that the reply started): a barge-in
        else:  # a new user turn (or, after a reopened stream, the one in progress again)
            number = self._number if self._reuse_number else self._last_turn() + 1
            self._stt_turn, self._number, self._reuse_number = event.turn, number, False
            self._speculation = Speculation()
        # a new turn, or the user talks over a reply already audible: barge-in (no-op when it ended)
        self._attempt = None
        await self._cancel_turn()

    async def _on_interim(self, event: InterimText) -> None:
        if event.turn != self._stt_turn or not event.text:
            return
        self._emit(InterimTranscriptEvent(self._number, event.text, event.language))
        # at_pause: the transcript of all the turn's speech, still current when it was ready (STT
        # sends it before any later SpeechStart), possibly before the turn detector's judgement
        if not event.at_pause or not self._settings.speculative_reply or self._attempt is not None:
            return
        control = ReplyControl(self._emit, committed=False, on_first_audio=self.reply_started)
        control.speculation = self._speculation
        self._speculation.starts += 1
        transcription = Transcription(event.text, event.language, event.audio_end_s, 0.0)
        task = await self._start_turn(TurnInput(self._number, 0.0, transcription=transcription,
                                                control=control))
        self._attempt = _Attempt(control, event.text, task)

    async def _on_end(self, event: TurnEnd) -> None:
        if event.turn != self._stt_turn:
            return
        now = time.perf_counter()
        speech_ended_at = self._clock.when(event.end_of_speech_s)
        attempt, text = self._attempt, event.transcription.text
        if (attempt is not None and not attempt.control.committed.is_set() and attempt.text == text
                and not attempt.task.done()):
            self._speculation.hits += 1
            attempt.control.commit(now, speech_ended_at)
            return
        if attempt is not None:
            await self._drop(attempt)
        control = ReplyControl(self._emit, committed=True, on_first_audio=self.reply_started)
        control.speculation = self._speculation
        control.ended_at, control.speech_ended_at = now, speech_ended_at
        task = await self._start_turn(TurnInput(self._number, now, transcription=event.transcription,
                                                control=control))
        self._attempt = _Attempt(control, text, task)

    async def _drop(self, attempt: _Attempt) -> None:
        """Cancel a reply nobody heard: a miss, and its LLM output wasted."""
        self._attempt = None
        attempt.control.discarded = True
        await self._cancel_turn()
        self._speculation.misses += 1
        self._speculation.tokens_wasted += attempt.control.output_units
        log.debug("reply dropped", extra={"turn": self._number, "units": attempt.control.output_units})
