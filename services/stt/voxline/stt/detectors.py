"""The turn detectors a Listen stream may ask for, and the models behind them (loaded once).

Silero VAD, Smart Turn and the text end-of-turn model are loaded at warm-up, before health says
SERVING; each stream then gets its own ``Endpointer`` (and its own Silero state) over the shared
ONNX sessions, and the shared ``WordsJudge`` for its pause transcripts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from voxline.common.errors import InvalidInput, NotConfigured
from voxline.stt.config import TurnSettings
from voxline.stt.endpoint import Endpointer, EndpointSettings
from voxline.stt.engine import warm_up_clip
from voxline.stt.listen import RecognitionCost
from voxline.stt.smart_turn import SmartTurn
from voxline.stt.text_model import load as load_text_model
from voxline.stt.text_turn import WordsJudge
from voxline.stt.vad import EnergyVad, SileroVad, silero_session

log = logging.getLogger(__name__)

#: Longest silence a stream may ask for, ms.
MAX_SILENCE_MS = 10_000


@dataclasses.dataclass(frozen=True)
class TurnOptions:
    """A stream's choices; empty/zero take the server's defaults."""

    detector: str = ""
    complete_silence_ms: int = 0
    incomplete_silence_ms: int = 0
    silence_ms: int = 0


class TurnDetectors:
    """Builds a stream's Endpointer from its options over the process's shared models."""

    def __init__(self, settings: TurnSettings) -> None:
        self._settings = settings
        self._silero: Any = None
        self._smart_turn: SmartTurn | None = None
        self._smart_turn_error = ""
        #: What a transcription costs here, shared by the Listen streams (early pause transcripts).
        self.cost = RecognitionCost(settings.early_transcript_max_ms)
        #: The words' P(complete) for pause transcripts (the language model joins it at warm-up).
        self.words = WordsJudge(unlikely=settings.text_unlikely)

    @property
    def settings(self) -> TurnSettings:
        return self._settings

    async def warm_up(self) -> None:
        """Load the models (blocking work in a thread); NotConfigured if the default one is missing."""
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        self._silero = silero_session()
        try:
            self._smart_turn = SmartTurn()
        except NotConfigured as exc:
            if self._settings.detector == "smart_turn":
                raise
            self._smart_turn_error = str(exc)
            log.warning("Smart Turn unavailable; streams asking for it are refused",
                        extra={"reason": str(exc)})
        if self._smart_turn is not None:
            self._smart_turn.probability(warm_up_clip())  # first run allocates
        if self._settings.text_veto:
            model = load_text_model(self._settings.text_model)
            if model is not None:
                model.end_probability("Hello there")  # first run allocates
                log.info("text end-of-turn model ready", extra={"model": str(model.directory)})
            self.words.model = model

    def endpointer(self, options: TurnOptions) -> Endpointer:
        """A fresh Endpointer for one stream (InvalidInput / NotConfigured for unusable options)."""
        s = self._settings
        detector = options.detector or s.detector
        for name in ("complete_silence_ms", "incomplete_silence_ms", "silence_ms"):
            value = getattr(options, name)
            if not 0 <= value <= MAX_SILENCE_MS:
                raise InvalidInput(f"{name} must be 0 (the server's default) or up to {MAX_SILENCE_MS} ms")
        settings = EndpointSettings(
            pause_ms=s.pause_ms,
            early_pause_ms=s.early_pause_ms,
            complete_silence_ms=options.complete_silence_ms or s.complete_silence_ms,
            incomplete_silence_ms=options.incomplete_silence_ms or s.incomplete_silence_ms,
            silence_ms=options.silence_ms or s.silence_ms,
            text_veto=s.text_veto,
            pause_heard_ms=s.pause_heard_ms,
        )
        if self._silero is None:
            raise NotConfigured("the turn detectors are still loading")
        if detector == "energy_vad":
            return Endpointer(EnergyVad(s.energy_threshold), dataclasses.replace(settings, min_speech_ms=60))
        if detector == "silero_vad":
            return Endpointer(SileroVad(self._silero), settings)
        if detector == "smart_turn":
            if self._smart_turn is None:
                raise NotConfigured(self._smart_turn_error or "Smart Turn is not loaded")
            return Endpointer(SileroVad(self._silero), settings, self._smart_turn.probability,
                              defer_judgement=True)
        raise InvalidInput(f"unknown turn detector {detector!r}")
