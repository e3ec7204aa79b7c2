"""The fake STTs' Listen: the STT service's own ``Endpointer`` over an RMS detector (a tone is speech,
digital silence is not), with a scripted Smart Turn judgement and scripted transcripts.

Turn-taking decisions are therefore the real ones, on the audio clock (so a test feeding audio
faster than real time sees what a microphone would), while nothing loads a model: each speech
segment of a turn "says" the next text of ``segments``, and a turn's transcript is the texts of its
segments joined. The events are the STT service's (``voxline.stt.endpoint`` / ``voxline.stt.listen``),
so the gRPC fake encodes them with the real servicer's mapping.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from voxline.stt.endpoint import (
    Endpointer,
    EndpointEvent,
    EndpointSettings,
    PauseDetected,
    SpeechPaused,
    SpeechStarted,
)
from voxline.stt.engine import Transcript
from voxline.stt.listen import Final, Interim, ListenEvent, PcmToModelRate
from voxline.stt.vad import EnergyVad


@dataclasses.dataclass
class ListenScript:
    """What the fake hears: texts per speech segment, Smart Turn's answers per pause."""

    #: The text of each speech segment, in order over the whole stream.
    segments: list[str] = dataclasses.field(default_factory=list)
    #: The text of a segment once ``segments`` ran out.
    default_segment: str = "What time is it?"
    #: P(complete) at each pause, in order; ``default_complete`` once they run out.
    complete: list[float] = dataclasses.field(default_factory=list)
    default_complete: float = 1.0
    #: The pause transcript comes at the pause itself, before the judgement (as the real service's
    #: often does: it starts at the first silent frame); by default it follows the judgement.
    transcript_before_judgement: bool = False
    #: Seconds a turn's final transcript takes (the stream hears nothing meanwhile): a slow
    #: recogniser, as Whisper's full window on a small CPU.
    final_delay_s: float = 0.0


class ScriptedListener:
    """One Listen stream of a fake STT."""

    def __init__(self, script: ListenScript, sample_rate: int, channels: int, *, detector: str = "",
                 complete_silence_ms: int = 0, incomplete_silence_ms: int = 0, silence_ms: int = 0) -> None:
        self._script = script
        self._to_model = PcmToModelRate(sample_rate, channels)
        settings = EndpointSettings(min_speech_ms=60, pause_ms=100,
                                    complete_silence_ms=complete_silence_ms or 200,
                                    incomplete_silence_ms=incomplete_silence_ms or 1500,
                                    silence_ms=silence_ms or 600)
        judge = self._judge if detector in ("", "smart_turn") else None
        self._endpointer = Endpointer(EnergyVad(), settings, judge)
        self._texts: dict[int, list[str]] = {}

    def _judge(self, audio: np.ndarray) -> float:
        return self._script.complete.pop(0) if self._script.complete else self._script.default_complete

    def audio(self, data: bytes) -> list[ListenEvent]:
        return self._events(self._endpointer.feed(self._to_model(data)))

    def end_turn(self) -> list[ListenEvent]:
        return self._events(self._endpointer.end_turn())

    def reply_started(self) -> None:
        self._endpointer.reply_started()

    def finish(self) -> list[ListenEvent]:
        return self._events(self._endpointer.finish())

    def _transcript(self, turn: int) -> Transcript:
        text = " ".join(t for t in self._texts.get(turn, []) if t)
        return Transcript(text=text, language="en", language_probability=1.0, segments=(),
                          audio_seconds=0.0, processing_ms=0.0, decode_ms=0.0)

    def _events(self, found: list[EndpointEvent]) -> list[ListenEvent]:
        out: list[ListenEvent] = []
        for event in found:
            if isinstance(event, PauseDetected):
                if self._script.transcript_before_judgement:
                    now = self._endpointer.now_s
                    out.append(Interim(event.turn, self._transcript(event.turn), now, True))
                continue
            if isinstance(event, SpeechStarted):
                segments = self._script.segments
                self._texts.setdefault(event.turn, []).append(
                    segments.pop(0) if segments else self._script.default_segment)
                out.append(event)
            elif isinstance(event, SpeechPaused):
                out.append(event)
                if self._script.transcript_before_judgement:
                    continue
                out.append(Interim(event.turn, self._transcript(event.turn), self._endpointer.now_s, True))
            else:
                out.append(Final(event, self._transcript(event.turn)))
        return out
