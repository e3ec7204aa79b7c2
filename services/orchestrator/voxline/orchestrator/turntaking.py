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
- **A turn that ends unheard** (its reply failed, or the transcript was empty) is a turn boundary
  too: STT is told (``ReplyStarted``) so the user's next words are a new turn, instead of being
  appended to the failed one until STT's turn limit ends the conversation.
- **Failover.** A Listen stream that fails as UNAVAILABLE (its STT replica died or is draining, or
  it ended before the conversation did) is opened again once a replica is ready — through the
  balanced channel, so on another replica, or on the same one back from a restart, waiting up to
  ``--stage-retry-wait-s`` as unary calls do — and replayed the audio since the last turn boundary
  (``listen_input.InputLog``), so the turn in progress is heard whole: no user turn is lost. A reply
  not yet audible is redone on the new stream's transcript.
- **Bounds.** The audio held for that replay and the backlog not yet read by STT are bounded in
  bytes (``listen_input``); a dead Listen loop wakes whoever waits to feed it, with its error.
- **The honest clock.** STT reports the end of speech as a position in the stream (the last voiced
  frame); the arrival time of the chunk that held it converts it to this process's clock, so
  ``end_of_speech_to_first_audio_ms`` includes the silence waited and every delay after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from voxline.orchestrator.domain import (
    EndTurnSignal,
    InterimText,
    ListenInput,
    SpeechPause,
    SpeechStart,
    StageClients,
    StageError,
    StageNotReady,
    Transcription,
    TurnDetection,
    TurnEnd,
)
from voxline.orchestrator.events import Event, InterimTranscriptEvent, SessionSettings
from voxline.orchestrator.listen_input import Close, InputLog
from voxline.orchestrator.reply_control import ReplyControl, Speculation
from voxline.orchestrator.turn import TurnInput

log = logging.getLogger(__name__)

#: Failures of a Listen stream that reopen it; more in a row (no turn ended in between: a replay
#: that fails again after the same speech counts too) end the session.
LISTEN_REOPENS = 2
#: Listen failures after which the stream is reopened on another replica: the replica went away.
#: (A client-streaming call whose server dies mid-write often reports INTERNAL "Internal error
#: from Core" rather than UNAVAILABLE; bad input — INVALID_ARGUMENT, RESOURCE_EXHAUSTED — is not
#: retried, and a failure that repeats ends the session after LISTEN_REOPENS tries.)
_REOPEN_CODES = frozenset({"UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN"})
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
                 default_silence_ms: int, max_audio_bytes: int = 16 * 1024 * 1024,
                 stall_s: float = 60.0) -> None:
        """``max_audio_bytes``: the most audio one turn may hold (``--max-turn-audio-mb``);
        ``stall_s``: how long the backlog may go untaken by STT before the stream ends."""
        self._stages = stages
        self._settings = settings
        self._emit = emit
        self._start_turn = start_turn
        self._cancel_turn = cancel_turn
        self._last_turn = last_turn
        fmt = settings.input_format
        self._bytes_per_second = 2 * max(fmt.channels, 1) * fmt.sample_rate_hz
        self._clock = StreamClock(self._bytes_per_second)
        # Every input in order; the current Listen stream reads it, a replay reads it again.
        self._input = InputLog(self._bytes_per_second, max_audio_bytes, stall_s)
        #: How long STT may take nothing (the backlog), or take to finish after the half-close.
        self.stall_s = stall_s
        self._detection = TurnDetection(settings.turn_detector, settings.turn_complete_silence_ms,
                                        settings.turn_incomplete_silence_ms,
                                        settings.vad_silence_ms or default_silence_ms)
        self._stt_turn = 0  # the STT stream's number of the current user turn
        self._number = 0  # the session's number for it
        self._speculation = Speculation()
        self._attempt: _Attempt | None = None
        self._reuse_number = False
        self._turn_closed = False  # the current turn reached a boundary: next speech is a new turn

    # ---- from the session ----------------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        """A chunk of the user's audio (waits while STT is behind: the backlog is bounded; raises
        the Listen loop's error once it has failed, LimitExceeded for a turn over the limit)."""
        await self._input.put_audio(data, time.perf_counter())

    async def end_turn(self) -> None:
        """The client marked the end of the utterance."""
        await self._input.put(EndTurnSignal())

    def reply_started(self) -> None:
        """A reply became audible (also a typed turn's): next speech is a new turn."""
        self._turn_closed = True
        self._input.boundary()

    async def close(self) -> None:
        """No more audio: the stream ends once STT has finished the last turn."""
        await self._input.put(Close())

    def release(self) -> None:
        """The session ended: give back the audio held for a replay."""
        self._input.release()
        self._clock = StreamClock(self._bytes_per_second)

    @property
    def held_bytes(self) -> int:
        """What the audio held for STT costs now, bytes."""
        return self._input.held_bytes

    # ---- the Listen loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forward the audio and act on STT's events until the stream ends. A stream that fails as
        UNAVAILABLE is reopened (another replica) and replayed; StageError when that fails too."""
        failures = 0
        try:
            while True:
                ended = [False]  # a turn ended on this stream: the failures before it are forgiven
                try:
                    await self._listen(ended)
                    return
                except StageError as exc:
                    failures = 1 if ended[0] else failures + 1
                    # (no replica ready within the retry wait: the outage outlasted it, give up)
                    if (exc.code_name not in _REOPEN_CODES or failures > LISTEN_REOPENS
                            or isinstance(exc, StageNotReady)):
                        raise
                    log.warning("speech recogniser stream failed; reopening it and replaying the turn",
                                extra={"turn": self._number, "code": exc.code_name, "attempt": failures})
                await self._prepare_reopen()
                # the balancer's view of the dead replica settles; the new stream then waits for a
                # ready replica (GrpcStages.listen, up to --stage-retry-wait-s)
                await asyncio.sleep(0.05 * failures)
        except Exception as exc:
            self._input.stop(exc)
            raise
        finally:  # whoever waits to feed a loop that ended learns it at once
            self._input.stop(StageError("stt", "UNAVAILABLE", "the speech recogniser stream ended"))

    async def _prepare_reopen(self) -> None:
        """Before a new stream: a reply not yet audible is cancelled (the new stream's turn end
        redoes it), and the new stream's first turn keeps this turn's number unless a reply was
        already heard (then its speech is a new turn, as it would have been)."""
        attempt = self._attempt
        audible = attempt is not None and attempt.control.first_audio_at is not None
        if attempt is not None and not audible:
            await self._drop(attempt)
        self._reuse_number = self._number > 0 and not audible and not self._turn_closed
        self._stt_turn = -1

    async def _listen(self, ended: list[bool]) -> None:
        fmt = self._settings.input_format
        closed = [False]
        events = self._stages.listen(self._requests(closed), fmt, self._settings.language,
                                     self._detection)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, SpeechStart):
                    await self._on_speech(event)
                elif isinstance(event, SpeechPause):
                    pass  # the judgement: STT ends the turn itself (speculation starts on at_pause)
                elif isinstance(event, InterimText):
                    await self._on_interim(event)
                elif isinstance(event, TurnEnd):
                    ended[0] = True
                    await self._on_end(event)
        if not closed[0]:  # a replica that ended the stream on its own (draining): another one goes on
            raise StageError("stt", "UNAVAILABLE", "the speech recogniser ended the stream early")

    async def _requests(self, closed: list[bool]) -> AsyncIterator[ListenInput]:
        """The inputs from the oldest one kept (a replay, after a failure) up to the half-close,
        which sets ``closed[0]``."""
        clock = self._clock = StreamClock(self._bytes_per_second)  # stream time starts again at 0
        async for entry in self._input.read():
            if isinstance(entry.item, bytes):
                clock.add(entry.size, entry.arrived)
            yield entry.item  # type: ignore[misc]
        closed[0] = self._input.closed

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
            self._turn_closed = False
            self._speculation = Speculation()
            self._input.new_turn(event.at_s)
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
        task.add_done_callback(functools.partial(self._reply_done, self._attempt))

    async def _on_end(self, event: TurnEnd) -> None:
        if event.turn != self._stt_turn:
            return
        now = time.perf_counter()
        speech_ended_at = self._clock.when(event.end_of_speech_s)
        decided_at = self._clock.when(event.ended_at_s)  # then STT ended the turn; then it transcribed
        attempt, text = self._attempt, event.transcription.text
        if (attempt is not None and not attempt.control.committed.is_set() and attempt.text == text
                and not attempt.task.done()):
            self._speculation.hits += 1
            attempt.control.commit(now, speech_ended_at, decided_at)
            return
        if attempt is not None:
            await self._drop(attempt)
        control = ReplyControl(self._emit, committed=True, on_first_audio=self.reply_started)
        control.speculation = self._speculation
        control.ended_at, control.speech_ended_at = now, speech_ended_at
        control.note_decision(decided_at)
        task = await self._start_turn(TurnInput(self._number, now, transcription=event.transcription,
                                                control=control))
        self._attempt = _Attempt(control, text, task)
        task.add_done_callback(functools.partial(self._reply_done, self._attempt))

    def _reply_done(self, attempt: _Attempt, _: asyncio.Task[None]) -> None:
        """A committed reply that ended with nothing audible (it failed, or the transcript was
        empty) still ends its turn: without the boundary STT would append the user's next words
        to it, until the turn passed STT's limit and the conversation ended."""
        control = attempt.control
        if (attempt is self._attempt and control.committed.is_set() and not control.discarded
                and control.first_audio_at is None):
            self._attempt = None
            self.reply_started()

    async def _drop(self, attempt: _Attempt) -> None:
        """Cancel a reply nobody heard: a miss, and its LLM output wasted."""
        self._attempt = None
        attempt.control.discarded = True
        await self._cancel_turn()
        self._speculation.misses += 1
        self._speculation.tokens_wasted += attempt.control.output_units
        log.debug("reply dropped", extra={"turn": self._number, "units": attempt.control.output_units})
