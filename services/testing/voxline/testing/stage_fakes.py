"""``InMemoryStages``: the orchestrator's ``StageClients`` with scripted stages and no socket.

A turn or a session runs against it exactly as against the gRPC stages. Like the fake servers, it
records what each stage was asked and when calls start, finish or are cancelled, and lets a test
hold a stage at a known point with a ``gate`` event instead of sleeping. Behaviour is changed by
setting attributes; a call reads them when it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from voxline.orchestrator.domain import (
    ChatMessage,
    EndTurnSignal,
    GenerateOptions,
    InputFormat,
    InterimText,
    ListenEvent,
    ListenInput,
    LlmSummary,
    PcmFormat,
    SpeechPause,
    SpeechStart,
    StageError,
    ToolCallDelta,
    Transcription,
    TurnDetection,
    TurnEnd,
)
from voxline.stt import endpoint, listen
from voxline.testing.fake_listen import ListenScript, ScriptedListener
from voxline.testing.fake_servers import CallLog, tone_pcm


@dataclasses.dataclass
class StageScript:
    """One stage's scripted behaviour and what it saw."""

    log: CallLog = dataclasses.field(default_factory=CallLog)
    #: Raised by the next calls (None: they succeed).
    fail: StageError | None = None
    #: With a gate set, the call waits for it (where depends on the stage) until the test sets it.
    gate: asyncio.Event | None = None


class InMemoryStages:
    """STT, LLM and TTS in memory; see the module docstring."""

    def __init__(self) -> None:
        self.stt, self.llm, self.tts = StageScript(), StageScript(), StageScript()
        #: STT: the transcript of every utterance, and the utterances received.
        self.transcript = "What time is it?"
        self.utterances: list[tuple[bytes, InputFormat, str]] = []
        #: LLM: the deltas of every reply (the gate holds the reply before delta ``gate_after``),
        #: and the requests received.
        self.deltas = ["Hello there. ", "How can ", "I help?"]
        self.gate_after = 1
        self.requests: list[tuple[list[ChatMessage], GenerateOptions]] = []
        #: TTS: voices, native rate, seconds of tone per character, chunks per sentence; the texts.
        self.voices = ["fake:en", "fake:fr"]
        self.sample_rate = 16000
        self.seconds_per_char = 0.005
        self.chunks = 2
        self.texts: list[str] = []
        #: TTS: what to announce as the format of a sentence (None: PCM at the asked or native rate).
        self.format_override: PcmFormat | None = None
        #: STT Listen: texts per speech segment and Smart Turn's answers (see fake_listen); what
        #: each stream was configured with, and how many ReplyStarted signals it got.
        self.listen_script = ListenScript()
        self.listens: list[tuple[InputFormat, str, TurnDetection]] = []
        self.replies_started = 0
        #: STT Listen: the current stream fails as UNAVAILABLE once it has received more than this
        #: many audio chunks (once), as when its replica dies; the audio chunks each stream received.
        self.listen_fail_after: int | None = None
        self.listen_chunks: list[int] = []

    @staticmethod
    def _enter(script: StageScript) -> None:
        script.log.calls += 1
        script.log.started.set()
        if script.fail is not None:
            raise script.fail

    @staticmethod
    def _cancelled(script: StageScript) -> None:
        script.log.cancellations += 1
        script.log.cancelled.set()

    async def transcribe(self, audio: bytes, fmt: InputFormat, language: str) -> Transcription:
        self._enter(self.stt)
        self.utterances.append((audio, fmt, language))
        gate = self.stt.gate
        try:
            if gate is not None:
                await gate.wait()
        except asyncio.CancelledError:
            self._cancelled(self.stt)
            raise
        self.stt.log.finished.set()
        return Transcription(self.transcript, language or "en", len(audio) / 32000.0, 0.0)

    async def generate(self, messages: Sequence[ChatMessage], options: GenerateOptions
                       ) -> AsyncGenerator[str | ToolCallDelta | LlmSummary, None]:
        self._enter(self.llm)
        self.requests.append((list(messages), options))
        deltas, gate, gate_after = list(self.deltas), self.llm.gate, self.gate_after
        try:
            for i, delta in enumerate(deltas):
                if gate is not None and i == gate_after:
                    await gate.wait()
                yield delta
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled(self.llm)
            raise
        self.llm.log.finished.set()
        yield LlmSummary(provider="fake", model="fake-model-1", ttft_ms=0.0, total_ms=0.0,
                         cache_hit=False, finish_reason="stop", input_tokens=12,
                         output_tokens=len(deltas))

    async def synthesize(self, text: str, voice: str, sample_rate_hz: int
                         ) -> AsyncGenerator[PcmFormat | bytes, None]:
        self._enter(self.tts)
        self.texts.append(text)
        gate = self.tts.gate
        rate = sample_rate_hz or self.sample_rate
        try:
            yield self.format_override or PcmFormat(rate, 1)
            if gate is not None:
                await gate.wait()
            pcm = tone_pcm(len(text) * self.seconds_per_char, rate)
            step = -(-len(pcm) // self.chunks) // 2 * 2 or 2
            for i in range(0, len(pcm), step):
                yield pcm[i:i + step]
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled(self.tts)
            raise
        self.tts.log.finished.set()

    async def list_voices(self) -> list[str]:
        self._enter(self.tts)
        return list(self.voices)

    async def listen(self, inputs: AsyncIterator[ListenInput], fmt: InputFormat, language: str,
                     detection: TurnDetection) -> AsyncGenerator[ListenEvent, None]:
        self._enter(self.stt)
        self.listens.append((fmt, language, detection))
        listener = ScriptedListener(self.listen_script, fmt.sample_rate_hz, fmt.channels or 1,
                                    detector=detection.detector,
                                    complete_silence_ms=detection.complete_silence_ms,
                                    incomplete_silence_ms=detection.incomplete_silence_ms,
                                    silence_ms=detection.silence_ms)
        self.listen_chunks.append(0)
        try:
            async for item in inputs:
                if isinstance(item, bytes):
                    self.listen_chunks[-1] += 1
                    fail_after = self.listen_fail_after
                    if fail_after is not None and self.listen_chunks[-1] > fail_after:
                        self.listen_fail_after = None
                        raise StageError("stt", "UNAVAILABLE", "the replica went away")
                    found = listener.audio(item)
                elif isinstance(item, EndTurnSignal):
                    found = listener.end_turn()
                else:
                    self.replies_started += 1
                    listener.reply_started()
                    found = []
                for event in found:
                    yield domain_event(event)
            for event in listener.finish():
                yield domain_event(event)
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled(self.stt)
            raise
        self.stt.log.finished.set()


def domain_event(event: listen.ListenEvent) -> ListenEvent:
    """The STT service's Listen event as the orchestrator's domain sees it."""
    if isinstance(event, endpoint.SpeechStarted):
        return SpeechStart(event.turn, event.at_s, event.continues_turn)
    if isinstance(event, endpoint.SpeechPaused):
        return SpeechPause(event.turn, event.end_of_speech_s, event.probability, event.silence_limit_ms)
    if isinstance(event, listen.Interim):
        t = event.transcript
        return InterimText(event.turn, t.text, t.language, event.audio_end_s, event.at_pause)
    ended, t = event.ended, event.transcript
    return TurnEnd(ended.turn, ended.end_of_speech_s, ended.ended_at_s, ended.reason.value,
                   ended.probability, Transcription(t.text, t.language, t.audio_seconds, t.processing_ms))
