"""One person's conversation: a ``Converse`` stream (server VAD on) between a transport and the
orchestrator. No HTTP or WebRTC here: a transport feeds 16 kHz PCM in and receives events, reply
audio and flush orders through a ``Listener``.

Barge-in: the orchestrator ends an interrupted reply with INTERRUPTED metrics the moment it hears
the user speak over it; a turn whose reply had already been sent whole is not interrupted there, so
any event of a later turn (the user's interim or final words) also stops what is still playing.
Either way the listener's ``flush`` runs at once, before anything else of that event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from voxline.edge.audio import RECOGNISER_RATE
from voxline.v1 import audio_pb2, llm_pb2, voice_pb2, voice_pb2_grpc

log = logging.getLogger(__name__)
tracer = trace.get_tracer("voxline.edge")

#: Input chunks waiting to be written to the orchestrator (20 ms each: 10 s).
MAX_PENDING_INPUT = 500


@dataclass(frozen=True)
class SessionSettings:
    """What every session asks of the orchestrator."""

    language: str = ""
    voice: str = ""
    system_prompt: str = ""
    max_reply_tokens: int = 0

    def config(self) -> voice_pb2.SessionConfig:
        tokens = self.max_reply_tokens
        sampling = llm_pb2.SamplingOptions(max_tokens=tokens) if tokens else None
        return voice_pb2.SessionConfig(
            input_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE,
                                               sample_rate_hz=RECOGNISER_RATE, channels=1),
            output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE),
            language=self.language, voice=self.voice, system_prompt=self.system_prompt,
            sampling=sampling, server_vad=True)


class Listener(Protocol):
    """What a transport does with the conversation."""

    def event(self, event: dict[str, Any]) -> None:
        """A JSON-able event with a ``type`` (transcripts, reply text, metrics, flushes)."""

    def audio(self, turn: int, pcm: bytes, rate: int) -> None:
        """Reply audio of ``turn``: 16-bit mono PCM at ``rate``."""

    def end_of_reply_audio(self, turn: int) -> None:
        """No more audio will come for ``turn``."""

    def flush(self, turn: int, reason: str) -> None:
        """Stop playing now: drop every queued frame (barge-in)."""

    def playing_turns(self) -> set[int]:
        """Turns whose audio is still queued or playing."""


class SessionEnded(Exception):
    """The orchestrator ended the stream; the message says why."""


@dataclass
class TurnTrack:
    """What the edge saw of one turn, for its span."""

    first_audio_at: float | None = None
    first_audio_wall_ns: int | None = None
    audio_bytes: int = 0
    rate: int = 0


@dataclass
class ConverseBridge:
    """One Converse stream: ``feed`` the user's audio, events go to the listener.

    ``run()`` owns the stream's two tasks (writer, reader) and returns when the stream ends.
    """

    channel: grpc.aio.Channel
    settings: SessionSettings
    listener: Listener
    metadata: tuple[tuple[str, str], ...] = ()
    #: Called with the number of input chunks dropped because the orchestrator fell behind.
    on_dropped: Callable[[int], None] = lambda n: None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    #: monotonic time of the last user speech or reply event (idle detection).
    last_activity: float = field(default_factory=time.monotonic)
    _input: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(MAX_PENDING_INPUT))
    _turns: dict[int, TurnTrack] = field(default_factory=dict)
    _rate: int = 0
    _closed: bool = False

    def feed(self, pcm16k: bytes) -> None:
        """Queue 16 kHz mono PCM of the user; never blocks (dropped and counted when full)."""
        if self._closed:
            return
        try:
            self._input.put_nowait(pcm16k)
        except asyncio.QueueFull:
            self.on_dropped(1)

    def close(self) -> None:
        """Half-close: no more audio; the stream ends when the orchestrator is done."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self._input.put_nowait(None)

    async def run(self) -> None:
        """Run the stream to its end; SessionEnded when the orchestrator refused or failed it."""
        call = voice_pb2_grpc.VoiceAssistantStub(self.channel).Converse(metadata=self.metadata or None)
        await call.write(voice_pb2.ConverseRequest(config=self.settings.config()))
        writer = asyncio.create_task(self._write(call), name=f"edge-write-{self.session_id}")
        try:
            await self._read(call)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise SessionEnded(f"orchestrator: {exc.code().name}: {exc.details()}") from None
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                await writer
            call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            chunk = await self._input.get()
            if chunk is None:
                await call.done_writing()
                return
            await call.write(voice_pb2.ConverseRequest(audio=chunk))

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            self._on_response(response)

    def _on_response(self, r: voice_pb2.ConverseResponse) -> None:
        kind = r.WhichOneof("event")
        turn = r.turn
        if kind != "audio":
            self.last_activity = time.monotonic()
        # a later turn's words while an earlier reply still plays: the user talked over it
        if kind in ("interim_transcript", "transcript"):
            stale = [t for t in self.listener.playing_turns() if t < turn]
            if stale:
                self.listener.flush(max(stale), "user_speech")
        if kind == "audio":
            self.last_activity = time.monotonic()
            track = self._turns.setdefault(turn, TurnTrack())
            if track.first_audio_at is None:
                track.first_audio_at, track.first_audio_wall_ns = time.perf_counter(), time.time_ns()
            track.audio_bytes += len(r.audio)
            self.listener.audio(turn, r.audio, self._rate)
        elif kind == "audio_format":
            self._rate = r.audio_format.sample_rate_hz
            self._turns.setdefault(turn, TurnTrack()).rate = self._rate
        elif kind == "transcript":
            self.listener.event({"type": "transcript", "turn": turn, "text": r.transcript.text,
                                 "language": r.transcript.language})
        elif kind == "interim_transcript":
            self.listener.event({"type": "interim_transcript", "turn": turn,
                                 "text": r.interim_transcript.text})
        elif kind == "assistant_text":
            self.listener.event({"type": "reply_text", "turn": turn, "delta": r.assistant_text.delta})
        elif kind == "metrics":
            self._on_metrics(turn, r.metrics)

    def _on_metrics(self, turn: int, metrics: voice_pb2.TurnMetrics) -> None:
        status = voice_pb2.TurnStatus.Name(metrics.status)
        if metrics.status == voice_pb2.INTERRUPTED and turn in self.listener.playing_turns():
            self.listener.flush(turn, "interrupted")  # first: before anything else is done
        self.listener.end_of_reply_audio(turn)
        body = MessageToDict(metrics, preserving_proto_field_name=True)
        body.update({"type": "turn_metrics", "turn": turn, "status": status})
        self.listener.event(body)
        self._span(turn, metrics, status)

    def _span(self, turn: int, metrics: voice_pb2.TurnMetrics, status: str) -> None:
        """The edge's span in the turn's trace (the orchestrator names the trace in the metrics)."""
        track = self._turns.pop(turn, None)
        if not metrics.trace_id or track is None or track.first_audio_wall_ns is None:
            return
        try:
            trace_id = int(metrics.trace_id, 16)
        except ValueError:
            return
        parent = NonRecordingSpan(SpanContext(trace_id, uuid.uuid4().int & (2**64 - 1), is_remote=True,
                                              trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        span = tracer.start_span("voxline.edge.reply", context=trace.set_span_in_context(parent),
                                 start_time=track.first_audio_wall_ns,
                                 attributes={"voxline.session.id": self.session_id,
                                             "voxline.turn.number": turn, "voxline.turn.status": status,
                                             "voxline.audio_bytes": track.audio_bytes})
        span.end()


async def run_owned(bridge: ConverseBridge, on_end: Callable[[str], Awaitable[None]]) -> None:
    """Run ``bridge`` and tell ``on_end`` why it ended ('' when the stream ended normally)."""
    reason = ""
    try:
        await bridge.run()
    except SessionEnded as exc:
        reason = str(exc)
    except grpc.aio.AioRpcError as exc:
        reason = f"orchestrator: {exc.code().name}: {exc.details()}"
    except Exception as exc:  # a bug: end this session, keep serving the others
        log.exception("session failed", extra={"session": bridge.session_id})
        reason = f"internal error ({type(exc).__name__})"
    await on_end(reason)
