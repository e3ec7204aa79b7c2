"""Between the turn-taker (server VAD) and one reply: ``ReplyControl`` and its ``Speculation`` counts.

A speculative reply, started at a pause, holds every event (text, audio) until the turn is
committed, and speaks only its first sentence ahead of that; cancelled before the commit, it leaves
no trace with the client, in the history or in the metrics (the turn-taker counts it as a miss).
``turntaking`` creates the controls; ``turn.TurnRunner`` emits through them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from voxline.orchestrator.events import AudioEvent, Event


@dataclasses.dataclass
class Speculation:
    """Replies started before their turn ended, for one user turn."""

    starts: int = 0
    hits: int = 0
    misses: int = 0
    #: LLM output of the cancelled ones (deltas; output tokens when a reply had finished).
    tokens_wasted: int = 0


class ReplyControl:
    """Between the turn-taker and one reply. The reply's events are held until the turn is committed
    *and* its first audio is ready (so text and audio of a reply the user never hears never reach the
    client); it knows when the user's speech really ended and when the first audio went out."""

    def __init__(self, emit: Callable[[Event], None], *, committed: bool,
                 on_first_audio: Callable[[], None] | None = None) -> None:
        self._emit = emit
        self._held: list[Event] = []
        self._on_first_audio = on_first_audio
        self.committed = asyncio.Event()
        if committed:
            self.committed.set()
        #: Set by the turn-taker before cancelling a reply nobody heard: it leaves no trace.
        self.discarded = False
        #: perf_counter: the commit (end of utterance), the last voiced frame (None: unknown).
        self.ended_at = 0.0
        self.speech_ended_at: float | None = None
        self.first_audio_at: float | None = None
        #: perf_counter: when STT decided the turn had ended (the audio it ended on was sent then;
        #: None: the commit's own time). The wait from there to the commit was recognition.
        self.decided_at: float | None = None
        #: The final transcript's wait after STT's decision, ms (server VAD: the recognition that
        #: was left at the end of the turn; 0 when it came with the decision).
        self.stt_ms = 0.0
        self.speculation = Speculation()
        #: LLM output so far: deltas, then the summary's output tokens (written by the reply).
        self.output_units = 0

    def note_decision(self, decided_at: float | None) -> None:
        """Split the wait before ``ended_at``: endpointing up to ``decided_at``, recognition after."""
        if decided_at is not None:
            self.decided_at = min(decided_at, self.ended_at)
            self.stt_ms = round((self.ended_at - self.decided_at) * 1000.0, 1)

    @property
    def silent(self) -> bool:
        """Nothing of this reply may reach the client (not committed, or dropped before audible)."""
        return not self.committed.is_set() or (self.discarded and self.first_audio_at is None)

    def emit(self, event: Event) -> None:
        if self.first_audio_at is None:
            if not (isinstance(event, AudioEvent) and self.committed.is_set()):
                self._held.append(event)
                return
            self._audible()
            self.flush()
        self._emit(event)

    def _audible(self) -> None:
        self.first_audio_at = time.perf_counter()
        if self._on_first_audio is not None:
            self._on_first_audio()

    def flush(self) -> None:
        """Send what was held (the reply's audio starts, or it ends without audio)."""
        held, self._held = self._held, []
        for event in held:
            self._emit(event)

    def commit(self, ended_at: float, speech_ended_at: float | None,
               decided_at: float | None = None) -> None:
        """The turn is confirmed: held audio goes out at once. ``decided_at``: when STT decided the
        end (before ``ended_at``, by the time its final transcript took)."""
        self.ended_at, self.speech_ended_at = ended_at, speech_ended_at
        self.note_decision(decided_at)
        self.committed.set()
        if any(isinstance(e, AudioEvent) for e in self._held):
            self._audible()
            self.flush()
