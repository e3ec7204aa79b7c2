"""One Converse stream: config first, then turns; barge-in; events out in order.

Two tasks per stream: the reader (requests → turns) and the caller's loop over ``events()``
(events → client). Turns run as one task at a time, owned by the reader: a new utterance (first
audio chunk, speech detected by the server VAD, or a text input) while a turn is still running
cancels it — its LLM and TTS calls are cancelled in the services — and its metrics (INTERRUPTED) are
emitted before anything of the next turn. When the client half-closes, the running turn finishes
and the stream ends; when the client cancels, everything is cancelled and nothing more is sent.

With server VAD, a ``TurnTaker`` forwards the audio to the STT service's Listen stream and starts
the turns it ends (see ``turntaking``); its Listen loop is a task owned here, and a failure of it
(STT down for longer than ``--stage-retry-wait-s``, bad audio) ends the stream like bad input does
— at once, whether or not the client is sending anything. The audio it holds is given back when
the stream ends.

Stage failures do not end the stream: the turn ends with FAILED metrics naming the stage, and the
next turn uses the stage again (it may be back by then). Only bad session input ends the stream,
with INVALID_ARGUMENT / RESOURCE_EXHAUSTED / UNAVAILABLE (TTS down when the voice must be checked).

Output is bounded (``Outbox``): a client that reads slowly holds the TTS stream back, and one that
leaves a full buffer unread for ``--unread-timeout-s`` has its stream ended (RESOURCE_EXHAUSTED).
On server shutdown (``drain``) the running turn finishes, no new one starts, and the stream ends
with OK as soon as nothing is left to do, instead of being held to the end of the grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator

from opentelemetry import trace

from voxline.common.errors import InvalidInput, LimitExceeded, clip
from voxline.orchestrator import heap, languages
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import StageClients, StageError
from voxline.orchestrator.events import (
    AudioRequest,
    ConfigRequest,
    EndOfUtteranceRequest,
    Event,
    Request,
    SessionSettings,
    TextRequest,
)
from voxline.orchestrator.history import History
from voxline.orchestrator.outbox import ClientNotReading, Outbox
from voxline.orchestrator.turn import TurnInput, TurnRunner
from voxline.orchestrator.turntaking import LISTEN_REOPENS, TurnTaker

log = logging.getLogger(__name__)

_END = object()  # marks the end of the event queue


class ConverseSession:
    """State of one Converse stream: settings, history, the utterance being received, the turn."""

    def __init__(self, stages: StageClients, config: OrchestratorConfig) -> None:
        self._stages = stages
        self._config = config
        self._out = Outbox(config.max_unread_bytes, config.unread_timeout_s)
        self._history = History(config.max_history_turns, config.max_history_chars)
        self._reader: asyncio.Task[None] | None = None
        self._error: ClientNotReading | None = None
        self._listen_error: BaseException | None = None
        self._finishing = False
        self._draining = False
        self._settings: SessionSettings | None = None
        self._runner: TurnRunner | None = None
        self._taker: TurnTaker | None = None
        self._listener: asyncio.Task[None] | None = None
        self._audio = bytearray()
        self._turns = 0
        self._turn_task: asyncio.Task[None] | None = None
        # The Converse server span, linked from each turn's root span when there is one (the
        # stream itself is not traced: each turn is a trace, tied to the others by session.id).
        self._session_span = trace.get_current_span().get_span_context()
        self._session_id = uuid.uuid4().hex

    async def events(self, requests: AsyncIterator[Request]) -> AsyncIterator[Event]:
        """Run the session; yield its events in order; raise the error that ends the stream."""
        reader = self._reader = asyncio.create_task(self._read(requests), name="converse-reader")
        try:
            while (event := await self._out.get()) is not _END:
                yield event  # type: ignore[misc]
            if self._error is not None:
                raise self._error
            if self._listen_error is not None:
                raise self._listen_error
            if reader.cancelled():  # drained: the stream ends cleanly
                return
            await reader  # re-raises the reader's error (bad input) after the events before it
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.wait([reader])
            heap.session_ended()

    async def _read(self, requests: AsyncIterator[Request]) -> None:
        try:
            async for request in requests:
                await self._handle(request)
                self._check_listener()
            if self._taker is not None and self._listener is not None:  # STT ends the last turn
                await self._taker.close()
                done, _ = await asyncio.wait([self._listener], timeout=self._taker.stall_s)
                if not done:  # a recogniser that hung: the client hears it, not its own deadline
                    raise StageError("stt", "DEADLINE_EXCEEDED", "the speech recogniser did not "
                                     f"finish the last turn within {self._taker.stall_s:g} s")
                self._listener.result()
            if self._turn_task is not None:  # half-close: let the last reply finish
                await asyncio.wait([self._turn_task])
        finally:
            self._finishing = True  # no more cancelling the reader: it is cleaning up
            try:
                if self._listener is not None:
                    self._listener.cancel()
                    await asyncio.wait([self._listener])
                await self._cancel_turn()
            finally:
                if self._taker is not None:
                    self._taker.release()
                self._audio = bytearray()
                self._out.put_nowait(_END)

    async def _handle(self, request: Request) -> None:
        if isinstance(request, ConfigRequest):
            if self._settings is not None:
                raise InvalidInput("config was already sent: it must come once, as the first message")
            await self._configure(request.settings)
            return
        if self._settings is None:
            raise InvalidInput("first message must be config")
        if isinstance(request, AudioRequest):
            await self._on_audio(request.data)
        elif isinstance(request, EndOfUtteranceRequest):
            await self._on_end_of_utterance()
        elif isinstance(request, TextRequest):
            if not request.text.strip():
                raise InvalidInput("text input is empty")
            # typed input replaces an utterance the client had started but not ended
            self._audio = bytearray()
            await self._start_turn(TurnInput(self._turns + 1, time.perf_counter(), text=request.text))
            if self._taker is not None:
                self._taker.reply_started()  # speech after a typed turn is a new turn

    async def _configure(self, settings: SessionSettings) -> None:
        if settings.voice:
            voices = await self._stages.list_voices()  # StageError UNAVAILABLE when TTS is down
            if settings.voice not in voices:
                raise InvalidInput(f"unknown voice {clip(settings.voice)}; available voices: "
                                   + (", ".join(voices) or "none"))
        fmt = settings.input_format
        if fmt.encoding == "PCM_S16LE" and fmt.sample_rate_hz <= 0:
            raise InvalidInput("input_format PCM_S16LE needs sample_rate_hz > 0")
        if settings.server_vad:
            if fmt.encoding != "PCM_S16LE":
                raise InvalidInput("server_vad needs input_format PCM_S16LE (raw PCM)")
        language = settings.language or self._config.language
        voice = settings.voice
        if not voice and languages.picks_a_voice(language):
            # --language fr: a French voice and prompt unless the session or the flags chose them
            try:
                voice = languages.default_voice(language, await self._stages.list_voices()) or ""
            except StageError as exc:  # TTS down: its default voice speaks, the turn says why
                log.warning("no voice list for the session's language", extra={"error": str(exc)})
        settings = dataclasses.replace(
            settings,
            system_prompt=settings.system_prompt or languages.default_prompt(
                language, self._config.system_prompt),
            language=language,
            voice=voice,
        )
        self._settings = settings
        self._runner = TurnRunner(self._stages, self._config, settings, self._history,
                                  self._out.put_nowait, self._session_span, session_id=self._session_id,
                                  room=self._room)
        if settings.server_vad:
            # STT may take nothing while it is reopened (each try waits up to the retry wait), and
            # for a transcription's deadline after that; longer, and the stream ends
            stall_s = ((LISTEN_REOPENS + 1) * self._config.stage_retry_wait_s
                       + self._config.deadlines.stt_s)
            self._taker = TurnTaker(self._stages, settings, self._out.put_nowait,
                                    start_turn=self._start_turn, cancel_turn=self._cancel_turn,
                                    last_turn=lambda: self._turns,
                                    default_silence_ms=self._config.vad_silence_ms,
                                    max_audio_bytes=self._config.max_turn_audio_bytes, stall_s=stall_s)
            self._listener = asyncio.create_task(self._taker.run(), name="converse-listener")
            self._listener.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        """The Listen loop failed (STT down, bad audio): the stream ends with its error now, not
        when the client next sends something (it may be waiting for a reply, or half-closed)."""
        if task.cancelled() or task.exception() is None:
            return
        self._listen_error = task.exception()
        if self._reader is not None and not self._finishing:
            self._reader.cancel()

    def _check_listener(self) -> None:
        """Raise the Listen loop's failure (STT down, bad audio), which ends the stream."""
        if self._listener is not None and self._listener.done() and not self._listener.cancelled():
            self._listener.result()

    async def _on_audio(self, data: bytes) -> None:
        if self._taker is not None:
            assert self._settings is not None
            frame = 2 * max(self._settings.input_format.channels, 1)
            if len(data) % frame:  # STT would refuse it too, after the backlog before it
                raise InvalidInput(f"audio chunk of {len(data)} bytes is not whole "
                                   f"{frame // 2}-channel 16-bit frames")
            await self._taker.feed(data)  # barge-in and turns come from the Listen loop
            return
        if not self._audio:
            await self._cancel_turn()  # the first chunk of a new utterance interrupts the reply
        self._audio += data
        self._check_size(len(self._audio))

    async def _on_end_of_utterance(self) -> None:
        ended_at = time.perf_counter()
        if self._taker is not None:
            await self._taker.end_turn()  # STT ends the turn, if there was speech
            return
        if not self._audio:
            raise InvalidInput("end_of_utterance without any audio before it")
        audio, self._audio = bytes(self._audio), bytearray()
        await self._start_turn(TurnInput(self._turns + 1, ended_at, audio=audio))

    def _check_size(self, size: int) -> None:
        if size > self._config.max_turn_audio_bytes:
            raise LimitExceeded(f"utterance is over {self._config.max_turn_audio_bytes} bytes of audio; "
                                "send end_of_utterance sooner")

    async def _start_turn(self, turn: TurnInput) -> asyncio.Task[None]:
        await self._cancel_turn()
        assert self._runner is not None
        self._turns = turn.number
        self._turn_task = asyncio.create_task(self._runner.run(turn), name=f"turn-{turn.number}")
        self._turn_task.add_done_callback(lambda _: self._end_if_drained())
        if self._draining:  # a turn that had started reaching us: it is the last one
            self._end_if_drained()
        return self._turn_task

    async def _room(self) -> None:
        """Awaited by the turn after each audio chunk: backpressure, and the slow-client policy."""
        try:
            await self._out.room()
        except ClientNotReading as exc:
            self._error = exc
            if self._reader is not None and not self._finishing:
                self._reader.cancel()  # no new turn for a client that does not read
            raise

    def drain(self) -> None:
        """The server is stopping: let the running turn finish, then end the stream cleanly."""
        self._draining = True
        self._end_if_drained()

    def _end_if_drained(self) -> None:
        running = self._turn_task is not None and not self._turn_task.done()
        if self._draining and not running and self._reader is not None and not self._finishing:
            self._reader.cancel()

    async def _cancel_turn(self) -> None:
        """Barge-in: cancel the running turn and wait until its metrics are out."""
        task, self._turn_task = self._turn_task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:  # run() reports its own failures
            log.error("turn task failed", exc_info=task.exception())
