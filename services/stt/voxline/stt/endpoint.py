"""Turn-taking on a live stream: where speech starts, pauses, resumes, and where the turn ends.

``Endpointer`` is a synchronous state machine over 16 kHz mono float32 audio, driven by the audio
clock only (seconds of audio received), so a test feeding audio faster than real time sees the
same events as a microphone. Per frame the VAD gives a speech probability; with hysteresis
(``threshold`` to start, ``threshold - 0.15`` to stay) it finds the last voiced frame: the real end
of speech. After ``pause_ms`` of silence the speech has *paused*: the turn detector judges the turn
(Smart Turn: how likely the sentence is complete) and sets the silence that will end the turn.
With ``early_pause_ms`` (shorter), ``PauseDetected`` comes that much earlier, so that the transcript
(and a speculative reply on it) can start before the pause is certain; speech that goes on after it
is a ``SpeechStarted`` that continues the turn (the early transcript is stale), and the judgement
still waits for ``pause_ms``.
Speech that resumes before that continues the turn; so does speech after the turn ended, until
``reply_started()`` says the assistant began to answer (from then on, speech is a new turn), or
until ``continue_ms`` of audio passed since the end (a turn whose reply failed, or whose transcript
was empty, is never answered: its audio is let go instead of growing into the stream's limit).
A turn whose audio reaches ``max_turn_ms`` ends there, even mid-speech, and is not continued:
long background speech ends one turn at a time, not the conversation.

The words can veto the voice: ``judge_text`` takes the pause transcript's own P(complete)
(``text_turn``: "…drive from", "…near the...") and the turn is judged on the lower of the two. It
may arrive before the voice's judgement (fast recogniser) or after the short limit ended the turn
(slow one): then the end is withdrawn while the longer limit has not passed, and the turn goes on.

Blocking (VAD ~0.1 ms per 32 ms frame, Smart Turn ~20 ms per pause, more on a busy CPU): call from
a worker thread. With ``defer_judgement`` a pause stops ``feed`` (``PauseDetected``) so that the
transcription of what was said starts before the turn detector runs (``judge``).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable

import numpy as np

from voxline.common.audio import WHISPER_RATE
from voxline.stt.vad import VoiceActivity

RATE = WHISPER_RATE


class EndReason(enum.Enum):
    """Why a turn ended."""

    COMPLETE = "complete"  # the detector judged it complete, and the short silence passed
    SILENCE = "silence"  # the long (or the only) silence limit passed
    CLIENT = "client"  # the client said so
    STREAM_END = "stream_end"  # the audio stream ended during the turn


@dataclasses.dataclass(frozen=True)
class SpeechStarted:
    turn: int
    at_s: float
    continues_turn: bool
    #: Bumped at every start and pause: work begun in an older epoch is stale.
    epoch: int


@dataclasses.dataclass(frozen=True)
class PauseDetected:
    """Speech paused, or (with ``early_pause_ms``) may be pausing: the moment to start transcribing
    what was said, without waiting for the turn detector (its judgement comes as ``SpeechPaused``)."""

    turn: int
    end_of_speech_s: float
    epoch: int
    #: Sent at ``early_pause_ms``, before the pause is certain.
    early: bool = False


@dataclasses.dataclass(frozen=True)
class SpeechPaused:
    turn: int
    end_of_speech_s: float
    #: P(complete) from the turn detector; -1 when the detector has no opinion.
    probability: float
    silence_limit_ms: int
    epoch: int
    #: P(complete) from the pause transcript's words (``judge_text``); -1: no opinion (yet).
    #: ``probability`` is the lower of the two: the words may send this event again for a pause.
    text_probability: float = -1.0


@dataclasses.dataclass(frozen=True)
class TurnEnded:
    turn: int
    end_of_speech_s: float
    ended_at_s: float
    reason: EndReason
    probability: float
    epoch: int


EndpointEvent = SpeechStarted | PauseDetected | SpeechPaused | TurnEnded


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """Thresholds of one stream (ms are of audio)."""

    #: P(speech) that starts speech; speech goes on while P >= threshold - 0.15.
    threshold: float = 0.5
    #: Voiced audio needed before speech counts as started.
    min_speech_ms: int = 64
    #: Silence after the last voiced frame that makes a pause (and triggers the judgement).
    pause_ms: int = 96
    #: Silence after which ``PauseDetected`` comes before the pause is certain (0 or >= pause_ms: at
    #: the pause). Speech that goes on within ``pause_ms`` continues the turn as a new epoch.
    early_pause_ms: int = 0
    #: Audio kept before the first voiced frame, for the recogniser.
    preroll_ms: int = 300
    #: With a turn detector: silence that ends a complete turn, and an incomplete one (P(complete)
    #: near 0; see ``silence_limit_ms``).
    complete_silence_ms: int = 200
    incomplete_silence_ms: int = 1500
    #: P(complete) at or over which the turn is judged complete.
    complete_threshold: float = 0.5
    #: Without a turn detector: the one silence that ends the turn.
    silence_ms: int = 600
    #: With a turn detector: the pause transcript's words may veto a "complete" (``judge_text``).
    text_veto: bool = True
    #: With a turn detector: of a pause the speech went on after, the silence the detector still
    #: hears, ms (-1: all of it). Smart Turn takes a long silence inside a sentence for hesitation
    #: and doubts the sentence's real end ("…while I | cook dinner.": 0.94 whole, 0.16 with the
    #: 700 ms pause heard), so the rest of such a silence is cut from what it judges.
    pause_heard_ms: int = 64
    #: Speech after a turn ended continues it (no reply started yet) only within this much audio
    #: of the end; later speech is a new turn, and the ended turn's audio is let go. 0: no limit.
    continue_ms: int = 30_000
    #: A turn whose audio (from its start, continuations included) reaches this ends at once, even
    #: mid-speech, as SILENCE (a limit passed), and is not continued: the next speech is a new turn.
    #: Under the Listen stream's own limit on a turn's audio (--max-audio-seconds, 120 s), so that
    #: continuous background speech ends turns, not the conversation. 0: no limit.
    max_turn_ms: int = 60_000


def silence_limit_ms(probability: float, s: EndpointSettings) -> int:
    """The silence that ends a turn judged ``probability`` complete: the short limit at or over the
    threshold; below it, from the short limit up to the long one as the probability falls to 0 (a
    borderline "incomplete" waits little longer than a complete sentence, a clear one the longest)."""
    if probability >= s.complete_threshold:
        return s.complete_silence_ms
    doubt = 1.0 - max(probability, 0.0) / s.complete_threshold
    return round(s.complete_silence_ms + (s.incomplete_silence_ms - s.complete_silence_ms) * doubt)


#: The turn detector: P(complete) of the turn's last seconds of audio (16 kHz mono float32).
TurnJudge = Callable[[np.ndarray], float]


class Endpointer:
    """VAD events and end-of-turn decisions for one stream (not thread-safe: one caller at a time)."""

    def __init__(self, vad: VoiceActivity, settings: EndpointSettings, judge: TurnJudge | None = None,
                 *, context_seconds: float = 8.0, defer_judgement: bool = False) -> None:
        """``defer_judgement``: ``feed`` stops at a pause (``judgement_due``) so the caller can start
        work on the audio so far before it calls ``judge`` (which then goes on with the audio)."""
        self._vad = vad
        self._defer = defer_judgement
        self.judgement_due = False
        self._s = settings
        self._judge = judge
        self._frame = vad.frame_samples
        self._pending = np.zeros(0, dtype=np.float32)
        self._pos = 0  # samples judged so far
        # the last seconds of audio, for the turn detector (which hears at most 8 s)
        self._recent: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, int(context_seconds * RATE) // self._frame))
        self._speaking = False
        self._early = False  # PauseDetected already sent for this silence, before pause_ms
        self._voiced_run = 0
        self._run_start = 0
        self._last_voiced_end = 0
        self._turn = 0
        self._turn_open = False  # a turn has speech and has not ended
        self._can_continue = False  # the turn ended, but no reply started: speech continues it
        self._turn_start = 0  # samples: first voiced sample of the turn, minus the pre-roll
        self._cut_frames = 0  # frames of the turn's pauses cut from ``_recent`` (pause_heard_ms)
        self._limit_ms: int | None = None  # set at a pause; None while speaking
        self._probability = -1.0  # the turn detector's (voice), then lowered by the words
        self._voice_probability = -1.0
        self._text: tuple[int, float] | None = None  # (epoch, P(complete)) from the words
        self._ended_epoch = -1  # epoch of the last turn end a transcript's words may withdraw
        self._ended_at = 0  # samples: where the last turn ended
        self.epoch = 0

    # ---- what the caller reads -----------------------------------------------------------------
    @property
    def now_s(self) -> float:
        """Seconds of audio judged so far."""
        return self._pos / RATE

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def turn_start_s(self) -> float:
        """Where the recogniser should start the current (or last) turn's audio."""
        return self._turn_start / RATE

    @property
    def turn_open(self) -> bool:
        """A turn has speech and has not ended (or its end was withdrawn)."""
        return self._turn_open

    @property
    def holds_turn(self) -> bool:
        """A turn is open, or ended but may still be continued: its audio must be kept."""
        return self._turn_open or self._can_continue

    # ---- inputs --------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> list[EndpointEvent]:
        """Judge new audio; the events it caused, in order."""
        events: list[EndpointEvent] = []
        if self.judgement_due:
            events += self._judge_pause()
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = len(data) - len(data) % self._frame
        self._pending = data[whole:]
        for start in range(0, whole, self._frame):
            frame = data[start:start + self._frame]
            self._recent.append(frame)
            self._step(frame, events)
            if self.judgement_due:  # the rest waits for judge()
                self._pending = data[start + self._frame:]
                break
        return events

    def judge(self) -> list[EndpointEvent]:
        """The due judgement of a pause (deferred mode), then the audio held back behind it."""
        if not self.judgement_due:
            return []
        return self._judge_pause() + self.feed(np.zeros(0, dtype=np.float32))

    def end_turn(self) -> list[EndpointEvent]:
        """The client marked the end of the turn (nothing happens without speech)."""
        return self._end(EndReason.CLIENT)

    def finish(self) -> list[EndpointEvent]:
        """The stream ended: end an open turn."""
        return self._end(EndReason.STREAM_END)

    def reply_started(self) -> None:
        """The assistant answers the last turn: speech from now on is a new turn."""
        self._can_continue = False
        self._ended_epoch = -1

    def judge_text(self, epoch: int, probability: float | None) -> list[SpeechPaused]:
        """The words of the pause transcript of ``epoch`` say P(complete) (None: no opinion).

        Only with a turn detector, and only for the current epoch (speech since makes the words
        stale). Before the voice's judgement it is kept for it; after it, a lower probability
        lengthens the silence limit (a new ``SpeechPaused``), and a turn that already ended on the
        shorter limit is open again while the longer one has not passed (a turn the client ended
        stays ended)."""
        if (self._judge is None or not self._s.text_veto or probability is None
                or epoch != self.epoch):
            return []
        self._text = (epoch, probability)
        reopen = (not self._turn_open and self._can_continue and self._ended_epoch == epoch)
        if not (self._turn_open and self._limit_ms is not None) and not reopen:
            return []  # the voice has not judged yet: _judge_pause combines both
        before = self._limit_ms
        self._probability = self._combined()
        limit = silence_limit_ms(self._probability, self._s)
        if reopen:
            if self._silence_ms() >= limit:
                return []  # the longer limit has passed too: the end stands
            self._turn_open, self._can_continue, self._ended_epoch = True, False, -1
        elif limit == before:
            return []
        self._limit_ms = limit
        return [self._paused_event()]

    def _combined(self) -> float:
        text = self._text[1] if self._text is not None and self._text[0] == self.epoch else None
        if text is None:
            return self._voice_probability
        return text if self._voice_probability < 0 else min(self._voice_probability, text)

    def _paused_event(self) -> SpeechPaused:
        text = self._text[1] if self._text is not None and self._text[0] == self.epoch else -1.0
        assert self._limit_ms is not None
        return SpeechPaused(self._turn, self._last_voiced_end / RATE, self._probability, self._limit_ms,
                            self.epoch, text)

    # ---- the state machine ---------------------------------------------------------------------
    def _step(self, frame: np.ndarray, events: list[EndpointEvent]) -> None:
        p = self._vad.probability(frame)
        frame_start, self._pos = self._pos, self._pos + self._frame
        if self._turn_open or self._can_continue:
            self._bound_turn(events)
        if self._speaking:
            if p >= self._s.threshold - 0.15:
                if self._early:  # it was a gap, not a pause: what was transcribed is stale
                    self._early = False
                    self.epoch += 1
                    events.append(SpeechStarted(self._turn, frame_start / RATE, True, self.epoch))
                self._last_voiced_end = self._pos
            elif self._silence_ms() >= self._s.pause_ms:
                self._pause(events)
            elif (not self._early and 0 < self._s.early_pause_ms < self._s.pause_ms
                  and self._silence_ms() >= self._s.early_pause_ms):
                self._early = True
                self.epoch += 1
                events.append(PauseDetected(self._turn, self._last_voiced_end / RATE, self.epoch, early=True))
            return
        if p >= self._s.threshold:
            if self._voiced_run == 0:
                self._run_start = frame_start
            self._voiced_run += 1
            if self._voiced_run * self._frame * 1000 >= self._s.min_speech_ms * RATE:
                self._start(events)
                return
        else:
            self._voiced_run = 0
        if self._turn_open and self._limit_ms is not None and self._silence_ms() >= self._limit_ms:
            events.append(self._ended(self._silence_reason()))

    def _bound_turn(self, events: list[EndpointEvent]) -> None:
        """End a turn that reached ``max_turn_ms`` (for good), and stop continuing one that ended
        ``continue_ms`` ago without a reply."""
        s = self._s
        if s.max_turn_ms > 0 and (self._pos - self._turn_start) * 1000 >= s.max_turn_ms * RATE:
            if self._turn_open:
                if self._speaking:  # cut mid-speech: the speech ends now
                    self._last_voiced_end = self._pos
                    self._speaking, self._early = False, False
                    self.epoch += 1
                events.append(self._ended(EndReason.SILENCE))
            self._can_continue, self._ended_epoch = False, -1
        elif (not self._turn_open and s.continue_ms > 0
              and (self._pos - self._ended_at) * 1000 >= s.continue_ms * RATE):
            self._can_continue, self._ended_epoch = False, -1

    def _silence_reason(self) -> EndReason:
        judged_complete = self._judge is not None and self._probability >= self._s.complete_threshold
        return EndReason.COMPLETE if judged_complete else EndReason.SILENCE

    def _silence_ms(self) -> float:
        return (self._pos - self._last_voiced_end) * 1000.0 / RATE

    def _start(self, events: list[EndpointEvent]) -> None:
        continues = self._turn_open or self._can_continue
        if not continues:
            self._turn += 1
            self._turn_start = max(0, self._run_start - self._s.preroll_ms * RATE // 1000)
            self._cut_frames = 0
        elif self._judge is not None and self._s.pause_heard_ms >= 0:
            self._cut_pause()
        self._speaking, self._turn_open, self._can_continue, self._early = True, True, False, False
        self._voiced_run, self._limit_ms, self._probability = 0, None, -1.0
        self._voice_probability, self._ended_epoch = -1.0, -1
        self._last_voiced_end = self._pos
        self.epoch += 1
        events.append(SpeechStarted(self._turn, self._run_start / RATE, continues, self.epoch))

    def _cut_pause(self) -> None:
        """The turn goes on after a pause: cut the pause's silence beyond ``pause_heard_ms`` from
        what the turn detector will hear (the frames just before the new speech)."""
        gap = (self._run_start - self._last_voiced_end) // self._frame
        cut = gap - self._s.pause_heard_ms * RATE // 1000 // self._frame
        if cut <= 0:
            return
        frames = list(self._recent)
        end = len(frames) - (self._pos - self._run_start) // self._frame  # the new speech's first
        if end - cut < 0:
            return  # the pause is older than the detector's window anyway
        del frames[end - cut:end]
        self._recent.clear()
        self._recent.extend(frames)
        self._cut_frames += cut

    def _pause(self, events: list[EndpointEvent]) -> None:
        self._speaking = False
        if not self._early:  # else it went out at early_pause_ms (same epoch: same transcript)
            self.epoch += 1
            events.append(PauseDetected(self._turn, self._last_voiced_end / RATE, self.epoch))
        self._early = False
        self.judgement_due = True
        if not (self._defer and self._judge is not None):
            events += self._judge_pause()

    def _judge_pause(self) -> list[EndpointEvent]:
        self.judgement_due = False
        if self._judge is not None:
            turn_frames = (self._pos - self._turn_start) // self._frame - self._cut_frames
            start = max(0, len(self._recent) - turn_frames)
            self._voice_probability = float(self._judge(np.concatenate(list(self._recent)[start:])))
            self._probability = self._combined()
            self._limit_ms = silence_limit_ms(self._probability, self._s)
        else:
            self._probability, self._limit_ms = -1.0, self._s.silence_ms
        events: list[EndpointEvent] = [self._paused_event()]
        if self._silence_ms() >= self._limit_ms:  # a limit shorter than the pause itself
            events.append(self._ended(self._silence_reason()))
        return events

    def _end(self, reason: EndReason) -> list[EndpointEvent]:
        if not self._turn_open:
            return []
        if self._speaking:  # cut mid-speech: the speech ends now
            if not self._early:
                self._last_voiced_end = self._pos
            self._speaking, self._early = False, False
            self.epoch += 1
        return [self._ended(reason)]

    def _ended(self, reason: EndReason) -> TurnEnded:
        self._turn_open, self._can_continue, self._limit_ms = False, True, None
        self._ended_at = self._pos
        # the words of a pause transcript still to come may withdraw an end on the silence
        self._ended_epoch = self.epoch if reason in (EndReason.COMPLETE, EndReason.SILENCE) else -1
        return TurnEnded(self._turn, self._last_voiced_end / RATE, self._pos / RATE, reason,
                         self._probability, self.epoch)

