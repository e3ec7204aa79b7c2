"""One turn: STT → LLM (streamed) → sentences → TTS (streamed), pipelined, traced and measured.

The LLM task feeds complete sentences into a bounded queue; a TTS task speaks them one by one, in
order, so the audio of sentence 1 streams to the client while the LLM is still writing sentence 2.
Both run in one TaskGroup: if either fails the other is cancelled, and cancelling the turn
(barge-in, client gone) cancels both, which cancels their calls in the services.

State has one owner each: the runner's own coroutine owns what was heard (STT) and the outcome,
the LLM task owns the ``_Reply`` it writes, the TTS task owns the ``_Speech`` it speaks. The
turn's metrics are built once, at the end, from those three records (so an interrupted or failed
turn reports as far as each stage got). The stages are reached through ``StageClients`` only.

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
from voxline.orchestrator.domain import ChatMessage, LlmSummary, PcmFormat, StageClients, StageError
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
class _Heard:
    """What the user said; written by the runner before the reply starts."""

    text: str = ""
    stt_ms: float = 0.0


@dataclasses.dataclass
class _Reply:
    """What the LLM wrote; written by the LLM task only."""

    parts: list[str] = dataclasses.field(default_factory=list)
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    summary: LlmSummary | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


@dataclasses.dataclass
class _Speech:
    """What TTS spoke and the client was sent; written by the TTS task only."""

    sentences: int = 0
    #: TTS time to first audio of the first sentence, ms.
    first_audio_ms: float = 0.0
    #: Time spent in TTS calls, all sentences, ms.
    total_ms: float = 0.0
    format: PcmFormat | None = None
    #: When the first audio went to the client (perf_counter).
    first_sent_at: float | None = None
    audio_bytes: int = 0
    #: WAV output: the header still to prepend to the next audio event.
    pending_header: bytes = b""


@dataclasses.dataclass
class _Outcome:
    """How the turn ended; written by ``run`` only."""

    status: str = COMPLETED
    error: str = ""


class TurnRunner:
    """Runs the turns of one session against the stages, emitting events as they happen."""

    def __init__(self, stages: StageClients, config: OrchestratorConfig, settings: SessionSettings,
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
        heard, reply, speech, outcome = _Heard(), _Reply(), _Speech(), _Outcome()
        span = self._tracer.start_span("voxline.turn", context=_NEW_TRACE, links=self._links,
                                       attributes={"voxline.turn.number": turn.number})
        try:
            await self._run(turn, trace.set_span_in_context(span), heard, reply, speech, outcome)
        except asyncio.CancelledError:
            outcome.status = INTERRUPTED
            raise
        except VoxlineError as exc:
            outcome.status, outcome.error = FAILED, str(exc)
        except Exception as exc:  # a bug: report the turn as failed, keep the session
            log.exception("turn failed", extra={"turn": turn.number})
            outcome.status = FAILED
            outcome.error = f"internal error ({type(exc).__name__}); see the orchestrator log"
        finally:
            metrics = _metrics(turn, span, heard, reply, speech, outcome)
            self._finish(turn, span, metrics, heard, reply)

    async def _run(self, turn: TurnInput, ctx: Context, heard: _Heard, reply: _Reply, speech: _Speech,
                   outcome: _Outcome) -> None:
        language = self._settings.language
        if turn.audio is not None:
            with self._tracer.start_as_current_span("stt", context=ctx) as span:
                result = await self._stages.transcribe(
                    turn.audio, self._settings.input_format, self._settings.language)
                span.set_attribute("voxline.audio_seconds", result.audio_seconds)
            heard.stt_ms = _ms(time.perf_counter() - turn.ended_at)
            heard.text, language = result.text, result.language
        else:
            heard.text = turn.text.strip()
        self._emit(TranscriptEvent(turn.number, heard.text, language))
        if not heard.text:
            outcome.status, outcome.error = FAILED, EMPTY_TRANSCRIPT
            return
        messages = self._history.messages(self._settings.system_prompt, heard.text)
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self._config.sentence_queue)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._write(turn, ctx, messages, sentences, reply))
                group.create_task(self._speak(turn, ctx, sentences, speech))
        except ExceptionGroup as errors:
            raise _one_failure(errors) from None

    async def _write(self, turn: TurnInput, ctx: Context, messages: list[ChatMessage],
                     sentences: asyncio.Queue[str | None], reply: _Reply) -> None:
        """The LLM task: stream the reply, emit its text, queue its sentences (None: the end)."""
        chunker = SentenceChunker(first_clause_chars=self._config.first_clause_chars)
        with self._tracer.start_as_current_span(
                "llm", context=ctx, attributes={"gen_ai.operation.name": "chat"}) as span:
            started = time.perf_counter()
            stream = self._stages.generate(messages, self._settings.generate_options)
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, LlmSummary):
                        reply.summary = item
                        continue
                    if not item:
                        continue
                    if not reply.parts:
                        reply.ttft_ms = _ms(time.perf_counter() - started)
                        span.set_attribute("voxline.llm.ttft_ms", reply.ttft_ms)
                    reply.parts.append(item)
                    self._emit(TextDeltaEvent(turn.number, item))
                    for sentence in chunker.feed(item):
                        await sentences.put(sentence)
            reply.total_ms = _ms(time.perf_counter() - started)
            if reply.summary is not None:
                span.set_attributes(_llm_attributes(reply.summary))
            for sentence in chunker.flush():
                await sentences.put(sentence)
        await sentences.put(None)

    async def _speak(self, turn: TurnInput, ctx: Context, sentences: asyncio.Queue[str | None],
                     speech: _Speech) -> None:
        """The TTS task: speak the queued sentences in order, streaming their audio out."""
        while (sentence := await sentences.get()) is not None:
            index = speech.sentences
            speech.sentences += 1
            with self._tracer.start_as_current_span("tts", context=ctx, attributes={
                    "voxline.sentence.index": index, "voxline.sentence.chars": len(sentence)}) as span:
                started = time.perf_counter()
                first_audio_ms: float | None = None
                audio = self._stages.synthesize(sentence, self._settings.voice,
                                                self._settings.output_sample_rate_hz)
                async with contextlib.aclosing(audio):
                    async for item in audio:
                        if isinstance(item, PcmFormat):
                            self._announce_format(turn, index, item, speech)
                            continue
                        if first_audio_ms is None:
                            first_audio_ms = _ms(time.perf_counter() - started)
                            span.set_attribute("voxline.tts.first_audio_ms", first_audio_ms)
                            if index == 0:
                                speech.first_audio_ms = first_audio_ms
                        self._send_audio(turn, item, speech)
                speech.total_ms = round(speech.total_ms + _ms(time.perf_counter() - started), 3)

    def _announce_format(self, turn: TurnInput, index: int, fmt: PcmFormat, speech: _Speech) -> None:
        if speech.format is None:
            speech.format = fmt
            encoding = self._settings.output_encoding
            self._emit(AudioFormatEvent(turn.number, encoding, fmt.sample_rate_hz, fmt.channels))
            if encoding == "WAV":  # one streaming WAV per turn; TTS itself always sends raw PCM
                speech.pending_header = wav_header(fmt.sample_rate_hz, fmt.channels)
        elif fmt != speech.format:
            raise StageError("tts", "INTERNAL",
                             f"sentence {index} came as {fmt}, earlier ones as {speech.format}")

    def _send_audio(self, turn: TurnInput, data: bytes, speech: _Speech) -> None:
        if speech.format is None:
            raise StageError("tts", "INTERNAL", "audio before its format")
        if speech.first_sent_at is None:
            speech.first_sent_at = time.perf_counter()
        speech.audio_bytes += len(data)
        self._emit(AudioEvent(turn.number, speech.pending_header + data))
        speech.pending_header = b""

    def _finish(self, turn: TurnInput, span: trace.Span, m: TurnMetrics, heard: _Heard,
                reply: _Reply) -> None:
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
        # An interrupted reply stays in the history as far as it got: the user heard (some of) it.
        if heard.text and (m.status == COMPLETED or (m.status == INTERRUPTED and reply.text)):
            self._history.add(heard.text, reply.text)
        log.info("turn", extra={"turn": turn.number, "status": m.status, "trace_id": m.trace_id,
                                "ttfa_ms": m.time_to_first_audio_ms, "total_ms": m.total_ms,
                                "error": m.error})
        self._emit(MetricsEvent(turn.number, m))


def _metrics(turn: TurnInput, span: trace.Span, heard: _Heard, reply: _Reply, speech: _Speech,
             outcome: _Outcome) -> TurnMetrics:
    """The turn's metrics, from what each stage reported (as far as it got)."""
    ended = time.perf_counter()
    fmt = speech.format
    audio_seconds = 0.0
    if fmt is not None and fmt.sample_rate_hz:
        audio_seconds = round(speech.audio_bytes / (2 * fmt.channels * fmt.sample_rate_hz), 3)
    summary = reply.summary
    return TurnMetrics(
        stt_ms=heard.stt_ms,
        llm_ttft_ms=reply.ttft_ms,
        llm_total_ms=reply.total_ms,
        tts_first_audio_ms=speech.first_audio_ms,
        time_to_first_audio_ms=(_ms(speech.first_sent_at - turn.ended_at)
                                if speech.first_sent_at is not None else 0.0),
        total_ms=_ms(ended - turn.ended_at),
        trace_id=format(span.get_span_context().trace_id, "032x"),
        llm_provider=summary.provider if summary is not None else "",
        cache_hit=summary.cache_hit if summary is not None else False,
        status=outcome.status,
        sentences=speech.sentences,
        reply_audio_seconds=audio_seconds,
        tts_total_ms=speech.total_ms,
        error=outcome.error,
    )


def _llm_attributes(summary: LlmSummary) -> dict[str, str | bool | int | list[str]]:
    return {
        "gen_ai.system": summary.provider,
        "gen_ai.provider.name": summary.provider,
        "gen_ai.request.model": summary.model,
        "gen_ai.response.model": summary.model,
        "gen_ai.usage.input_tokens": summary.input_tokens,
        "gen_ai.usage.output_tokens": summary.output_tokens,
        "gen_ai.response.finish_reasons": [summary.finish_reason or "stop"],
        "voxline.llm.cache_hit": summary.cache_hit,
    }


class TurnFailed(VoxlineError):
    """More than one stage failed in the same turn: every failure, in the order they happened."""

    def __init__(self, failures: list[VoxlineError]) -> None:
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))


def _one_failure(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ends a turn whose LLM or TTS task failed; no failure is dropped: one stage
    error is raised as it is, several are joined, and anything else (a bug) keeps the whole group
    for the log."""
    failures = _flatten(errors)
    if len(failures) == 1:
        return failures[0]
    voxline = [f for f in failures if isinstance(f, VoxlineError)]
    if len(voxline) == len(failures):
        return TurnFailed(voxline)
    return errors


def _flatten(errors: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in errors.exceptions:
        out += _flatten(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out
