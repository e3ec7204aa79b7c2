"""One turn: STT → LLM (streamed) → sentences → TTS (streamed), pipelined, traced and measured.

The LLM task feeds complete sentences into a bounded queue; a TTS task speaks them one by one, in
order, so the audio of sentence 1 streams to the client while the LLM is still writing sentence 2.
Both run in one TaskGroup: if either fails the other is cancelled, and cancelling the turn
(barge-in, client gone) cancels both, which cancels their calls in the services.

State has one owner each: the runner's own coroutine owns what was heard (STT) and the outcome,
the LLM task owns the ``_Reply`` it writes, the TTS task owns the ``_Speech`` it speaks. The
turn's metrics are built once, at the end, from those three records (so an interrupted or failed
turn reports as far as each stage got). The stages are reached through ``StageClients`` only.

When the client marks the end of the utterance, STT is one unary ``Transcribe`` of the whole
utterance (the baseline's in-memory path); ``stt_ms`` runs from end of utterance to the transcript.
With server VAD the turn arrives already transcribed by the STT service's Listen stream
(``TurnInput.transcription``), and a ``ReplyControl`` (``reply_control``) ties the reply to the
turn-taker: a speculative reply holds its events until the turn is committed, and one cancelled
before the commit leaves no trace with the client, in the history or in the metrics.

Each turn is the root of its own trace (``voxline.turn``): a conversation can last for hours, a
turn is what a latency investigation looks at. The conversation's turns share a ``session.id``
(the Converse stream itself is not traced); ``turn_spans`` says what else the spans carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from voxline.common import turn_events
from voxline.common.audio import wav_header
from voxline.common.errors import VoxlineError
from voxline.common.metrics import record_turn
from voxline.common.sentences import RepetitionGuard, SentenceChunker
from voxline.orchestrator import turn_spans
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import (
    ChatMessage,
    LlmSummary,
    PcmFormat,
    StageClients,
    StageError,
    Transcription,
)
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
from voxline.orchestrator.history import History
from voxline.orchestrator.reply_control import ReplyControl, Speculation
from voxline.orchestrator.tools.loop import SpeakNow, ToolRecord, reply_stream
from voxline.orchestrator.tools.toolbox import CallContext

log = logging.getLogger(__name__)

TRACER_NAME = "voxline.orchestrator"
_NEW_TRACE = trace.set_span_in_context(trace.INVALID_SPAN)
EMPTY_TRANSCRIPT = "no speech recognised: the transcript is empty, so the LLM was not called"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclasses.dataclass(frozen=True)
class TurnInput:
    """A user turn: speech (audio), typed text, or speech already transcribed (server VAD), and
    when the user finished (perf_counter; with a ``control``, the control's commit time counts)."""

    number: int
    ended_at: float
    audio: bytes | None = None
    text: str = ""
    transcription: Transcription | None = None
    #: server VAD: the turn-taker's handle on this reply (None: a plain turn).
    control: ReplyControl | None = None


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
    #: The turn's tool calls (none when the session has no tools).
    tools: ToolRecord = dataclasses.field(default_factory=ToolRecord)

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


@dataclasses.dataclass
class _Speech:
    """What TTS spoke and the client was sent; written by the TTS task only."""

    sentences: int = 0
    #: The sentences whose audio (at least its first chunk) went out, in order.
    spoken: list[str] = dataclasses.field(default_factory=list)
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
                 session_span: trace.SpanContext | None = None, *, session_id: str = "",
                 room: Callable[[], Awaitable[None]] | None = None) -> None:
        self._stages = stages
        self._config = config
        self._settings = settings
        self._history = history
        self._emit = emit
        # awaited after each audio chunk: waits while the client is behind (backpressure to TTS)
        self._room = room
        self._tracer = trace.get_tracer(TRACER_NAME)
        self._links = [trace.Link(session_span)] if session_span and session_span.is_valid else []
        self._session = turn_spans.session_attributes(session_id)
        self._capture = turn_spans.capture_content()

    async def run(self, turn: TurnInput) -> None:
        """Run one turn to its end; always emits the turn's metrics last (also when cancelled)."""
        heard, reply, speech, outcome = _Heard(), _Reply(), _Speech(), _Outcome()
        span = self._tracer.start_span("voxline.turn", context=_NEW_TRACE, links=self._links,
                                       attributes={"voxline.turn.number": turn.number,
                                                   **turn_spans.TURN_ATTRIBUTES, **self._session})
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
            if turn.control is not None and turn.control.silent:
                # a speculative reply that never got its turn: nothing reached the client
                span.set_attributes({"voxline.speculative": True, "voxline.turn.status": "discarded",
                                     "voxline.speculative.output_units": turn.control.output_units})
                span.end()
            else:
                if turn.control is not None:
                    turn.control.flush()
                metrics = _metrics(turn, span, heard, reply, speech, outcome)
                first_sent = turn.control.first_audio_at if turn.control is not None else speech.first_sent_at
                if first_sent is not None:
                    span.add_event(turn_events.FIRST_AUDIO_SENT, timestamp=turn_spans.epoch_ns(first_sent))
                if self._capture:
                    span.set_attributes(turn_spans.text_io(heard.text, reply.text))
                # server VAD: a reply cut by a barge-in keeps, in the history, what the user heard
                said = " ".join(speech.spoken) if turn.control is not None else None
                self._finish(turn, span, metrics, heard, reply, said=said)

    async def _run(self, turn: TurnInput, ctx: Context, heard: _Heard, reply: _Reply, speech: _Speech,
                   outcome: _Outcome) -> None:
        language = self._settings.language
        if turn.transcription is not None:
            heard.text, language = turn.transcription.text, turn.transcription.language or language
            heard.stt_ms = turn.control.stt_ms if turn.control is not None else 0.0
        elif turn.audio is not None:
            with self._tracer.start_as_current_span(
                    "stt", context=ctx, attributes=turn_spans.STT_ATTRIBUTES) as span:
                result = await self._stages.transcribe(
                    turn.audio, self._settings.input_format, self._settings.language)
                span.set_attribute("voxline.audio_seconds", result.audio_seconds)
                if self._capture:
                    span.set_attributes(turn_spans.text_io(output_text=result.text))
                span.set_status(Status(StatusCode.OK))
            heard.stt_ms = _ms(time.perf_counter() - turn.ended_at)
            heard.text, language = result.text, result.language
        else:
            heard.text = turn.text.strip()
        self._out(turn)(TranscriptEvent(turn.number, heard.text, language))
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
        if turn.control is not None:  # a speculative reply that is done ends with its turn
            await turn.control.committed.wait()

    def _out(self, turn: TurnInput) -> Callable[[Any], None]:
        """Where the turn's events go: through its control (held until the commit), or straight out."""
        return turn.control.emit if turn.control is not None else self._emit

    async def _write(self, turn: TurnInput, ctx: Context, messages: list[ChatMessage],
                     sentences: asyncio.Queue[str | None], reply: _Reply) -> None:
        """The LLM task: stream the reply, emit its text, queue its sentences (None: the end)."""
        chunker = SentenceChunker(first_clause_chars=self._config.first_clause_chars,
                                  first_max_chars=self._config.first_piece_max_chars)
        guard = RepetitionGuard(self._config.repetition_stop) if self._config.repetition_stop else None
        with self._tracer.start_as_current_span(
                "llm", context=ctx, attributes={**turn_spans.LLM_ATTRIBUTES, **self._session}) as span:
            if self._capture:
                span.set_attributes(turn_spans.llm_input(messages))
            started = time.perf_counter()
            handed = False
            stream = reply_stream(  # the tool loop, or the plain LLM stream without tools
                self._stages, messages, self._settings.generate_options, self._settings.tools,
                language=self._settings.language, context=CallContext(turn.number, self._out(turn)),
                record=reply.tools, parent=ctx,
                gate=turn.control.committed.wait if turn.control is not None else None)
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, LlmSummary):
                        reply.summary = item
                        continue
                    if isinstance(item, SpeakNow):  # a tool call: speak what was written, now
                        await self._speak_now(turn, item, chunker, sentences)
                        continue
                    if not isinstance(item, str) or not item:
                        continue
                    if not reply.parts:
                        reply.ttft_ms = _ms(time.perf_counter() - started)
                        span.set_attribute("voxline.llm.ttft_ms", reply.ttft_ms)
                        span.add_event(turn_events.FIRST_TOKEN)
                    reply.parts.append(item)
                    if turn.control is not None:
                        turn.control.output_units += 1
                    self._out(turn)(TextDeltaEvent(turn.number, item))
                    looped_at = guard.feed(item) if guard is not None else None
                    if looped_at is not None:  # a degenerate loop: stop the LLM, drop the loop
                        text = "".join(reply.parts)  # as fed, unstripped
                        chunker.drop_tail(len(text) - looped_at)
                        reply.parts[:] = [text[:looped_at]]  # the history keeps no loop
                        span.add_event(turn_events.REPETITION_STOPPED, {"voxline.chars": looped_at})
                        log.warning("reply stopped: it repeats itself",
                                    extra={"turn": turn.number, "chars": len(text)})
                        break
                    for sentence in chunker.feed(item):
                        if not handed:
                            handed = True
                            span.add_event(turn_events.FIRST_CLAUSE_TO_TTS, {"voxline.chars": len(sentence)})
                        await sentences.put(sentence)
            reply.total_ms = _ms(time.perf_counter() - started)
            if self._capture:
                span.set_attributes(turn_spans.llm_output(reply.text))
            if reply.summary is not None:
                span.set_attributes(turn_spans.llm_summary(reply.summary))
                if turn.control is not None and reply.summary.output_tokens:
                    turn.control.output_units = reply.summary.output_tokens
            for sentence in chunker.flush():
                if not handed:
                    handed = True
                    span.add_event(turn_events.FIRST_CLAUSE_TO_TTS, {"voxline.chars": len(sentence)})
                await sentences.put(sentence)
            span.set_status(Status(StatusCode.OK))
        await sentences.put(None)

    async def _speak_now(self, turn: TurnInput, item: SpeakNow, chunker: SentenceChunker,
                         sentences: asyncio.Queue[str | None]) -> None:
        """Text written before a tool call goes to TTS at once; a filler is said (and shown) as
        its own sentence, but kept out of the reply's text (and so of the history)."""
        for sentence in chunker.flush():
            await sentences.put(sentence)
        if item.filler:
            self._out(turn)(TextDeltaEvent(turn.number, item.filler + " "))
            await sentences.put(item.filler)

    async def _speak(self, turn: TurnInput, ctx: Context, sentences: asyncio.Queue[str | None],
                     speech: _Speech) -> None:
        """The TTS task: speak the queued sentences in order, streaming their audio out."""
        while (sentence := await sentences.get()) is not None:
            if speech.sentences and turn.control is not None:
                await turn.control.committed.wait()  # speculation speaks the first sentence only
            index = speech.sentences
            speech.sentences += 1
            with self._tracer.start_as_current_span("tts", context=ctx, attributes={
                    "voxline.sentence.index": index, "voxline.sentence.chars": len(sentence),
                    **turn_spans.TTS_ATTRIBUTES,
                    **(turn_spans.text_io(input_text=sentence) if self._capture else {})}) as span:
                started = time.perf_counter()
                first_audio_ms: float | None = None
                audio = self._stages.synthesize(sentence, self._settings.voice,
                                                self._settings.output_sample_rate_hz)
                async with contextlib.aclosing(audio):
                    async for item in audio:
                        if isinstance(item, PcmFormat):
                            self._announce_format(turn, index, item, speech)
                            continue
                        first_chunk = first_audio_ms is None
                        if first_chunk:
                            first_audio_ms = _ms(time.perf_counter() - started)
                            span.set_attribute("voxline.tts.first_audio_ms", first_audio_ms)
                            if index == 0:
                                speech.first_audio_ms = first_audio_ms
                        self._send_audio(turn, item, speech)
                        if first_chunk:
                            speech.spoken.append(sentence)
                        if self._room is not None:
                            await self._room()
                speech.total_ms = round(speech.total_ms + _ms(time.perf_counter() - started), 3)
                span.set_status(Status(StatusCode.OK))

    def _announce_format(self, turn: TurnInput, index: int, fmt: PcmFormat, speech: _Speech) -> None:
        if speech.format is None:
            speech.format = fmt
            encoding = self._settings.output_encoding
            self._out(turn)(AudioFormatEvent(turn.number, encoding, fmt.sample_rate_hz, fmt.channels))
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
        self._out(turn)(AudioEvent(turn.number, speech.pending_header + data))
        speech.pending_header = b""

    def _finish(self, turn: TurnInput, span: trace.Span, m: TurnMetrics, heard: _Heard,
                reply: _Reply, *, said: str | None = None) -> None:
        """``said``: the sentences whose audio went out, kept in the history if the reply was cut
        (None: keep the reply as far as the LLM wrote it)."""
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
            "voxline.end_of_speech_to_first_audio_ms": m.end_of_speech_to_first_audio_ms,
            "voxline.endpointing_ms": m.endpointing_ms,
            "voxline.speculative.starts": m.speculative_starts,
            "voxline.speculative.hits": m.speculative_hits,
            "voxline.speculative.misses": m.speculative_misses,
            "voxline.speculative.tokens_wasted": m.speculative_tokens_wasted,
            "voxline.tool.calls": m.tool_calls,
            "voxline.tool.ms": m.tool_ms,
        })
        # OK for a turn that completed or was cut by the user (not an error); ERROR with its reason
        # for a failed one (the gRPC spans follow OpenTelemetry's RPC conventions: Unset unless failed)
        span.set_status(Status(StatusCode.ERROR, m.error) if m.status == FAILED else Status(StatusCode.OK))
        span.end()
        # An interrupted reply stays in the history as far as it got: the user heard (some of) it.
        kept = reply.text if said is None or m.status != INTERRUPTED else said
        # tool calls stay too (with "cancelled" results when a barge-in cut them short)
        exchange = reply.tools.exchange
        if heard.text and (m.status == COMPLETED or (m.status == INTERRUPTED and (kept or exchange))):
            self._history.add(heard.text, kept, exchange)
        log.info("turn", extra={"turn": turn.number, "status": m.status, "trace_id": m.trace_id,
                                "ttfa_ms": m.time_to_first_audio_ms, "total_ms": m.total_ms,
                                "error": m.error})
        record_turn(m.status, stt_ms=m.stt_ms, llm_ttft_ms=m.llm_ttft_ms, llm_total_ms=m.llm_total_ms,
                    tts_first_audio_ms=m.tts_first_audio_ms,
                    time_to_first_audio_ms=m.time_to_first_audio_ms, llm_provider=m.llm_provider)
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
    control = turn.control
    ended_at, first_sent = turn.ended_at, speech.first_sent_at
    speech_ended_at: float | None = None
    decided_at = ended_at
    speculation = Speculation()
    if control is not None:
        ended_at, first_sent = control.ended_at, control.first_audio_at
        speech_ended_at, speculation = control.speech_ended_at, control.speculation
        decided_at = control.decided_at if control.decided_at is not None else ended_at
    return TurnMetrics(
        # server VAD: known at the commit, which a speculative reply's run started before
        stt_ms=control.stt_ms if control is not None else heard.stt_ms,
        llm_ttft_ms=reply.ttft_ms,
        llm_total_ms=reply.total_ms,
        tts_first_audio_ms=speech.first_audio_ms,
        time_to_first_audio_ms=_ms(first_sent - ended_at) if first_sent is not None else 0.0,
        total_ms=_ms(ended - ended_at),
        end_of_speech_to_first_audio_ms=(_ms(first_sent - speech_ended_at)
                                         if first_sent is not None and speech_ended_at is not None
                                         else 0.0),
        endpointing_ms=_ms(decided_at - speech_ended_at) if speech_ended_at is not None else 0.0,
        speculative_starts=speculation.starts,
        speculative_hits=speculation.hits,
        speculative_misses=speculation.misses,
        speculative_tokens_wasted=speculation.tokens_wasted,
        tool_calls=reply.tools.calls,
        tool_ms=reply.tools.ms,
        trace_id=format(span.get_span_context().trace_id, "032x"),
        llm_provider=summary.provider if summary is not None else "",
        cache_hit=summary.cache_hit if summary is not None else False,
        status=outcome.status,
        sentences=speech.sentences,
        reply_audio_seconds=audio_seconds,
        tts_total_ms=speech.total_ms,
        error=outcome.error,
    )


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
