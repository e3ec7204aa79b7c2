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
    Transcription,
    TurnDetection,
    TurnEnd,
)
from voxline.orchestrator.events import Event, InterimTranscriptEvent, SessionSettings
from voxline.orchestrator.turn import ReplyControl, Speculation, TurnInput

log = logging.getLogger(__name__)

#: Chunks (and signals) waiting to be sent to STT; a microphone's 20 ms chunks: ~5 s.
INPUT_QUEUE = 256
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
        self._clock = StreamClock(2 * max(fmt.channels, 1) * fmt.sample_rate_hz)
        self._inputs: asyncio.Queue[ListenInput | None] = asyncio.Queue(maxsize=INPUT_QUEUE)
        self._detection = TurnDetection(settings.turn_detector, settings.turn_complete_silence_ms,
                                        settings.turn_incomplete_silence_ms,
                                        settings.vad_silence_ms or default_silence_ms)
        self._stt_turn = 0  # the STT stream's number of the current user turn
        self._number = 0  # the session's number for it
        self._speculation = Speculation()
        self._attempt: _Attempt | None = None
        self._speaking_since_pause = True

    # ---- from the session ----------------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        """A chunk of the user's audio (waits while STT is behind: the queue is bounded)."""
        self._clock.add(len(data), time.perf_counter())
        await self._inputs.put(data)

    async def end_turn(self) -> None:
        """The client marked the end of the utterance."""
        await self._inputs.put(EndTurnSignal())

    def reply_started(self) -> None:
        """A reply became audible (also a typed turn's): next speech is a new turn."""
        try:
            self._inputs.put_nowait(ReplyStartedSignal())
        except asyncio.QueueFull:
            raise LimitExceeded("the speech recogniser is not keeping up with the audio") from None

    async def close(self) -> None:
        """No more audio: the stream ends once STT has finished the last turn."""
        await self._inputs.put(None)

    # ---- the Listen loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forward the audio and act on STT's events until the stream ends (StageError if STT fails)."""
        fmt = self._settings.input_format
        events = self._stages.listen(self._requests(), fmt, self._settings.language, self._detection)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, SpeechStart):
                    await self._on_speech(event)
                elif isinstance(event, SpeechPause):
                    self._speaking_since_pause = False
                elif isinstance(event, InterimText):
                    await self._on_interim(event)
                elif isinstance(event, TurnEnd):
                    await self._on_end(event)

    async def _requests(self) -> AsyncIterator[ListenInput]:
        while (item := await self._inputs.get()) is not None:
            yield item

    async def _on_speech(self, event: SpeechStart) -> None:
        self._speaking_since_pause = True
        attempt = self._attempt
        if event.continues_turn and event.turn == self._stt_turn:
            # the user goes on: whatever reply was started for this turn is premature
            if attempt is None:
                return
            if attempt.control.first_audio_at is None:
                await self._drop(attempt)
                return
            # already audible (STT had not yet heard that the reply started): a barge-in
        else:  # a new user turn
            self._stt_turn, self._number = event.turn, self._last_turn() + 1
            self._speculation = Speculation()
        # a new turn, or the user talks over a reply already audible: barge-in (no-op when it ended)
        self._attempt = None
        await self._cancel_turn()

    async def _on_interim(self, event: InterimText) -> None:
        if event.turn != self._stt_turn or not event.text:
            return
        self._emit(InterimTranscriptEvent(self._number, event.text, event.language))
        if (not event.at_pause or self._speaking_since_pause or not self._settings.speculative_reply
                or self._attempt is not None):
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
