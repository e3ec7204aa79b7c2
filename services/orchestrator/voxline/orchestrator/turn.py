"""One turn: STT → LLM (streamed) → sentences → TTS (streamed), pipelined, traced and measured.

The LLM task feeds complete sentences into a bounded queue; a TTS task speaks them one by one, in
order, so the audio of sentence 1 streams to the client while the LLM is still writing sentence 2.
Both run in one TaskGroup: if either fails the other is cancelled, and cancelling the turn
(barge-in, client gone) cancels both, which cancels their gRPC calls in the services.

STT is one unary ``Transcribe`` of the whole utterance, sent at end of utterance (the baseline's
in-memory path); ``stt_ms`` runs from end of utterance to the transcript. ``StreamingTranscribe``
would not shorten that: its final transcript decodes the whole clip after the half-close too, and
its partials (best effort, raw PCM only) are not needed to start the LLM.

Each turn is the root of its own trace (``voxline.turn``), linked to the Converse call's span:
a conversation can last for hours, a turn is what a latency investigation looks at.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from voxline.common.audio import wav_header
from voxline.common.errors import VoxlineError
from voxline.common.sentences import SentenceChunker
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.events import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    AudioEvent,
    AudioFormatEvent,
    Event,
    MetricsEvent,
    SessionSettings,
    TextDeltaEvent,
    TranscriptEvent,
    TurnMetrics,
)
from voxline.orchestrator.stages import ChatMessage, LlmSummary, PcmFormat, StageError, Stages

log = logging.getLogger(__name__)

TRACER_NAME = "voxline.orchestrator"
_NEW_TRACE = trace.set_span_in_context(trace.INVALID_SPAN)
EMPTY_TRANSCRIPT = "no speech recognised: the transcript is empty, so the LLM was not called"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclasses.dataclass(frozen=True)
class TurnInput:
    """A user turn: speech (audio) or typed text, and when the user finished (perf_counter)."""

    number: int
    ended_at: float
    audio: bytes | None = None
    text: str = ""


class History:
    """The conversation so far (user/assistant pairs), bounded, kept per Converse stream."""

    def __init__(self, max_turns: int) -> None:
        self._turns: collections.deque[tuple[str, str]] = collections.deque(maxlen=max_turns)

    def messages(self, system_prompt: str, user_text: str) -> list[ChatMessage]:
        """System prompt, previous turns, then the new user message."""
        out = [ChatMessage("system", system_prompt)] if system_prompt else []
        for user, assistant in self._turns:
            out += [ChatMessage("user", user), ChatMessage("assistant", assistant)]
        out.append(ChatMessage("user", user_text))
        return out

    def add(self, user_text: str, reply: str) -> None:
        if self._turns.maxlen:
            self._turns.append((user_text, reply))

    def __len__(self) -> int:
        return len(self._turns)


@dataclasses.dataclass
class _TurnState:
    metrics: TurnMetrics = dataclasses.field(default_factory=TurnMetrics)
    user_text: str = ""
    reply: list[str] = dataclasses.field(default_factory=list)
    audio_format: PcmFormat | None = None
    wav_header: bytes = b""
    first_audio_at: float | None = None
    audio_bytes: int = 0


class TurnRunner:
    """Runs the turns of one session against the stages, emitting events as they happen."""

    def __init__(self, stages: Stages, config: OrchestratorConfig, settings: SessionSettings,
                 history: History, emit: Callable[[Event], None],
                 session_span: trace.SpanContext | None = None) -> None:
        self._stages = stages
        self._config = config
        self._settings = settings
        self._history = history
        self._emit = emit
        self._tracer = trace.get_tracer(TRACER_NAME)
        self._links = [trace.Link(session_span)] if session_span and session_span.is_valid else []

    async def run(self, turn: TurnInput) -> None:
        """Run one turn to its end; always emits the turn's metrics last (also when cancelled)."""
        state = _TurnState()
        span = self._tracer.start_span("voxline.turn", context=_NEW_TRACE, links=self._links,
                                       attributes={"voxline.turn.number": turn.number})
        state.metrics.trace_id = format(span.get_span_context().trace_id, "032x")
        try:
            await self._run(turn, state, trace.set_span_in_context(span))
        except asyncio.CancelledError:
            state.metrics.status = INTERRUPTED
            raise
        except VoxlineError as exc:
            state.metrics.status, state.metrics.error = FAILED, str(exc)
        except Exception as exc:  # a bug: report the turn as failed, keep the session
            log.exception("turn failed", extra={"turn": turn.number})
            state.metrics.status = FAILED
            state.metrics.error = f"internal error ({type(exc).__name__}); see the orchestrator log"
        finally:
            self._finish(turn, state, span)

    async def _run(self, turn: TurnInput, state: _TurnState, ctx: Context) -> None:
        m = state.metrics
        if turn.audio is not None:
            with self._tracer.start_as_current_span("stt", context=ctx) as span:
                result = await self._stages.transcribe(
                    turn.audio, self._settings.input_format, self._settings.language)
                span.set_attribute("voxline.audio_seconds", result.audio_seconds)
            m.stt_ms = _ms(time.perf_counter() - turn.ended_at)
            text, language = result.text, result.language
        else:
            text, language = turn.text.strip(), self._settings.language
        state.user_text = text
        self._emit(TranscriptEvent(turn.number, text, language))
        if not text:
            m.status, m.error = FAILED, EMPTY_TRANSCRIPT
            return
        messages = self._history.messages(self._settings.system_prompt, text)
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self._config.sentence_queue)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._llm(turn, ctx, messages, sentences, state))
                group.create_task(self._tts(turn, ctx, sentences, state))
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def _llm(self, turn: TurnInput, ctx: Context, messages: list[ChatMessage],
                   sentences: asyncio.Queue[str | None], state: _TurnState) -> None:
        m = state.metrics
        chunker = SentenceChunker(first_clause_chars=self._config.first_clause_chars)
        summary: LlmSummary | None = None
        s = self._settings
        with self._tracer.start_as_current_span(
                "llm", context=ctx, attributes={"gen_ai.operation.name": "chat"}) as span:
            started = time.perf_counter()
            replies = self._stages.generate(messages, s.sampling, s.llm_providers, s.no_cache)
            async with contextlib.aclosing(replies):
                async for item in replies:
                    if isinstance(item, LlmSummary):
                        summary = item
                        continue
                    if not item:
                        continue
                    if not state.reply:
                        m.llm_ttft_ms = _ms(time.perf_counter() - started)
                        span.set_attribute("voxline.llm.ttft_ms", m.llm_ttft_ms)
                    state.reply.append(item)
                    self._emit(TextDeltaEvent(turn.number, item))
                    for sentence in chunker.feed(item):
                        await sentences.put(sentence)
            m.llm_total_ms = _ms(time.perf_counter() - started)
            if summary is not None:
                m.llm_provider, m.cache_hit = summary.provider, summary.cache_hit
                span.set_attributes({
                    "gen_ai.system": summary.provider,
                    "gen_ai.provider.name": summary.provider,
                    "gen_ai.request.model": summary.model,
                    "gen_ai.response.model": summary.model,
                    "gen_ai.usage.input_tokens": summary.input_tokens,
                    "gen_ai.usage.output_tokens": summary.output_tokens,
                    "gen_ai.response.finish_reasons": [summary.finish_reason or "stop"],
                    "voxline.llm.cache_hit": summary.cache_hit,
                })
            for sentence in chunker.flush():
                await sentences.put(sentence)
        await sentences.put(None)

    async def _tts(self, turn: TurnInput, ctx: Context, sentences: asyncio.Queue[str | None],
                   state: _TurnState) -> None:
        m = state.metrics
        index = 0
        while (sentence := await sentences.get()) is not None:
            m.sentences = index + 1
            with self._tracer.start_as_current_span("tts", context=ctx, attributes={
                    "voxline.sentence.index": index, "voxline.sentence.chars": len(sentence)}) as span:
                started = time.perf_counter()
                first_audio: float | None = None
                audio = self._stages.synthesize(sentence, self._settings.voice,
                                                self._settings.output_sample_rate_hz)
                async with contextlib.aclosing(audio):
                    async for item in audio:
                        if isinstance(item, PcmFormat):
                            self._announce_format(turn, index, item, state)
                            continue
                        if first_audio is None:
                            first_audio = _ms(time.perf_counter() - started)
                            span.set_attribute("voxline.tts.first_audio_ms", first_audio)
                            if index == 0:
                                m.tts_first_audio_ms = first_audio
                        self._send_audio(turn, item, state)
                m.tts_total_ms = round(m.tts_total_ms + _ms(time.perf_counter() - started), 3)
            index += 1

    def _announce_format(self, turn: TurnInput, index: int, fmt: PcmFormat, state: _TurnState) -> None:
        if state.audio_format is None:
            state.audio_format = fmt
            encoding = self._settings.output_encoding
            self._emit(AudioFormatEvent(turn.number, encoding, fmt.sample_rate_hz, fmt.channels))
            if encoding == "WAV":  # one streaming WAV per turn; TTS itself always sends raw PCM
                state.wav_header = wav_header(fmt.sample_rate_hz, fmt.channels)
        elif fmt != state.audio_format:
            raise StageError("tts", self._stages.tts.address, "INTERNAL",
                             f"sentence {index} came as {fmt}, earlier ones as {state.audio_format}")

    def _send_audio(self, turn: TurnInput, data: bytes, state: _TurnState) -> None:
        if state.audio_format is None:
            raise StageError("tts", self._stages.tts.address, "INTERNAL", "audio before its format")
        if state.first_audio_at is None:
            state.first_audio_at = time.perf_counter()
        state.audio_bytes += len(data)
        self._emit(AudioEvent(turn.number, state.wav_header + data))
        state.wav_header = b""

    def _finish(self, turn: TurnInput, state: _TurnState, span: trace.Span) -> None:
        m = state.metrics
        m.total_ms = _ms(time.perf_counter() - turn.ended_at)
        if state.first_audio_at is not None:
            m.time_to_first_audio_ms = _ms(state.first_audio_at - turn.ended_at)
        fmt = state.audio_format
        if fmt is not None and fmt.sample_rate_hz:
            m.reply_audio_seconds = round(state.audio_bytes / (2 * fmt.channels * fmt.sample_rate_hz), 3)
        span.set_attributes({
            "voxline.turn.status": m.status,
            "voxline.stt_ms": m.stt_ms,
            "voxline.llm.ttft_ms": m.llm_ttft_ms,
            "voxline.llm.total_ms": m.llm_total_ms,
            "voxline.tts.first_audio_ms": m.tts_first_audio_ms,
            "voxline.time_to_first_audio_ms": m.time_to_first_audio_ms,
            "voxline.total_ms": m.total_ms,
            "voxline.llm.provider": m.llm_provider,
            "voxline.llm.cache_hit": m.cache_hit,
            "voxline.sentences": m.sentences,
        })
        if m.status == FAILED:
            span.set_status(Status(StatusCode.ERROR, m.error))
        span.end()
        reply = "".join(state.reply).strip()
        # An interrupted reply stays in the history as far as it got: the user heard (some of) it.
        if state.user_text and (m.status == COMPLETED or (m.status == INTERRUPTED and reply)):
            self._history.add(state.user_text, reply)
        log.info("turn", extra={"turn": turn.number, "status": m.status, "trace_id": m.trace_id,
                                "ttfa_ms": m.time_to_first_audio_ms, "total_ms": m.total_ms,
                                "error": m.error})
        self._emit(MetricsEvent(turn.number, m))
