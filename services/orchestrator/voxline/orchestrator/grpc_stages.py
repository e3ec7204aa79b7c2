"""The gRPC edge towards the three stages: ``GrpcStages`` implements ``domain.StageClients``.

Every call uses ``wait_for_ready=False``: a stage that is down fails the call at once with
UNAVAILABLE instead of hanging until a deadline. Failures become ``StageError``, whose message
names the stage but not its address ("UNAVAILABLE: llm stage unavailable: ..."); the address is
logged.

Streaming calls are async generators that cancel their gRPC call when closed or cancelled, so a
barge-in reaches the service (its handler sees the cancellation). Consume them with
``contextlib.aclosing``.

A stage may have several replicas (``voxline.orchestrator.balancing``): each channel balances its
calls ``round_robin``. A call that fails with UNAVAILABLE before it produced any output is tried
once more, within the same deadline, on the next ready replica (a replica that is gone has left the
rotation) — or, with one replica, on that stage once it is back: the retry waits for a ready
replica up to ``--stage-retry-wait-s`` (within the deadline), so a stage restarted by its supervisor
delays the turn instead of failing it. Retried: STT of a whole utterance, an LLM reply before its
first token, one sentence's TTS before its first audio, ListVoices. A half-streamed reply or
sentence is never retried (the user would hear it twice). The Listen stream is reopened and
replayed by the turn-taker instead (its turn state lives in one replica); each Listen call first
waits, up to ``--stage-retry-wait-s``, for a ready replica, so a reopened stream reaches STT back
from its restart instead of failing again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.common.call_status import ServerStatus
from voxline.common.config import read_config_file, read_token_file
from voxline.common.metrics import record_stage_retry
from voxline.orchestrator.balancing import ROUND_ROBIN_SERVICE_CONFIG, channel_target
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
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
    Sampling,
    SpeechPause,
    SpeechStart,
    StageError,
    StageNotReady,
    ToolCallDelta,
    Transcription,
    TurnDetection,
    TurnEnd,
)
from voxline.v1 import audio_pb2, llm_pb2, llm_pb2_grpc, stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc

log = logging.getLogger(__name__)

# Reconnect quickly: the stages are local services, and a stage that comes back should be reached
# within about a second (gRPC's defaults back off up to two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Own subchannels: a replacement channel (see StageChannel) must not inherit the failed one's
    # connection state and backoff through gRPC's global subchannel pool.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    # Balance over every replica the address names; ignore service configs published in DNS.
    ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
    ("grpc.service_config_disable_resolution", 1),
]

#: Tries of a stage call that fails with UNAVAILABLE before producing output (one retry).
ATTEMPTS = 2
#: Failures that mean "this replica is gone or going", not "this request is wrong": UNAVAILABLE,
#: and CANCELLED sent by the server (our own cancellation raises CancelledError instead): a
#: replica shutting down cancels the calls it had received but not yet started
#: (https://github.com/grpc/grpc/issues/41785).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
#: Pause before the retry (gRPC's own retry policy backs off too): when a replica dies, its calls
#: fail the moment its socket closes, a little before round_robin has dropped it from the rotation.
RETRY_BACKOFF_S = 0.05
#: A channel younger than this is not replaced after a failure unless its connection failed: it is
#: still making its first connection, and when many calls fail at once (a replica died under every
#: session) replacing it again for each would close the channels the others just moved to.
RECOVER_MIN_AGE_S = 1.0
_Reply = TypeVar("_Reply")


#: Codes a stage returns when it refuses the orchestrator itself (its TLS or token settings): the
#: Converse client did nothing wrong, so it sees UNAVAILABLE naming the stage; the cause is logged.
_REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class StageChannel:
    """One stage's address and channel; a channel that failed to connect is replaced on demand.

    The channel is created on first use, inside the server's event loop and after telemetry is set
    up (so the gRPC client instrumentation is on it). gRPC channels reconnect by themselves, but only
    after their backoff; replacing a channel that is not connected after a failure lets the next turn
    reach a stage that is back at once. The replaced channel is closed one replacement later (or at
    shutdown), so calls other sessions may still have queued on it are not cut short.
    """

    def __init__(self, stage: str, address: str, *, tls_ca: bytes | None = None,
                 token: str = "", retry_wait_s: float = 0.0) -> None:
        self.stage = stage
        self.address = address
        self.retry_wait_s = retry_wait_s
        self._tls_ca = tls_ca
        #: Call metadata carrying the bearer token (empty without one); pass it on every call.
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        self._channel: Any = None
        self._retired: Any = None
        self._created_at = 0.0

    def _new_channel(self) -> Any:
        target = channel_target(self.address)
        if self._tls_ca is None:
            return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(root_certificates=self._tls_ca)
        return grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)

    @property
    def channel(self) -> Any:
        if self._channel is None:
            self._channel = self._new_channel()
            self._created_at = asyncio.get_running_loop().time()
        return self._channel

    async def recover(self) -> None:
        """After a failed call: replace the channel unless it is connected (READY) or is a new one
        still making its first connection."""
        state = self.channel.get_state(try_to_connect=False)
        if state == grpc.ChannelConnectivity.READY:
            return  # the service itself answered with an error: the connection is fine
        now = asyncio.get_running_loop().time()
        if state != grpc.ChannelConnectivity.TRANSIENT_FAILURE and now - self._created_at < RECOVER_MIN_AGE_S:
            return
        if self._retired is not None:
            await self._retired.close()
        self._retired, self._channel, self._created_at = self._channel, self._new_channel(), now

    async def wait_ready(self, wait_s: float) -> bool:
        """Whether a replica is ready (READY: connected and SERVING), waiting up to ``wait_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while True:
            channel = self.channel  # re-read: a failed call elsewhere may have replaced it
            state = channel.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.READY:
                return True
            left = end - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await channel.wait_for_state_change(state)

    def call_options(self, deadline: _Deadline, attempt: int) -> dict[str, Any]:
        """Timeout and readiness for try ``attempt``: the first fails at once when no replica is
        up; the retry, made once a replica is ready, rides out a brief disconnection."""
        return {"timeout": deadline.left(), "wait_for_ready": attempt > 1 and self.retry_wait_s > 0}

    async def retry_after(self, exc: grpc.aio.AioRpcError, attempt: int, deadline: _Deadline) -> bool:
        """Whether a call that failed with ``exc`` before producing any output is tried again: on
        UNAVAILABLE (a replica gone or going), once, when a replica is ready — another one, or this
        one back from a restart — within ``retry_wait_s`` and the deadline."""
        if attempt >= ATTEMPTS or exc.code() not in RETRYABLE:
            return False
        await self.recover()
        await asyncio.sleep(RETRY_BACKOFF_S)
        if self.retry_wait_s > 0 and not await self.wait_ready(
                max(0.0, min(self.retry_wait_s, deadline.left()))):
            log.warning("stage not back in time; the call fails", extra={
                "stage": self.stage, "address": self.address, "waited_s": self.retry_wait_s})
            return False
        record_stage_retry(self.stage)
        log.warning("stage call retried", extra={"stage": self.stage, "address": self.address,
                                                 "code": exc.code().name, "reason": exc.details()})
        return True

    async def unary(self, deadline: _Deadline,
                    call: Callable[[dict[str, Any]], Awaitable[_Reply]]) -> _Reply:
        """``call(options)`` (a unary call made with ``call_options``), retried as ``retry_after``
        says; a failure becomes the StageError."""
        attempt = 1
        while True:
            try:
                return await call(self.call_options(deadline, attempt))
            except grpc.aio.AioRpcError as exc:
                if await self.retry_after(exc, attempt, deadline):
                    attempt += 1
                    continue
                raise await self.error(exc) from exc

    async def error(self, exc: grpc.aio.AioRpcError) -> StageError:
        """The StageError for a failed call (and channel recovery when it is needed)."""
        code = exc.code()
        await self.recover()
        detail = exc.details() or code.name
        if code in _REFUSED:
            log.error("stage refused the orchestrator", extra={
                "stage": self.stage, "address": self.address, "code": code.name, "reason": detail})
            return StageError(self.stage, "UNAVAILABLE",
                              f"it refused the orchestrator ({code.name}); see the orchestrator log",
                              self.address)
        return StageError(self.stage, code.name, detail, self.address)

    async def health(self, deadline_s: float) -> StageHealth:
        """The stage's overall health (never raises)."""
        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=deadline_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return StageHealth(self.stage, self.address, f"{exc.code().name}: {exc.details()}")
        status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        return StageHealth(self.stage, self.address, status)

    async def close(self) -> None:
        for channel in (self._retired, self._channel):
            if channel is not None:
                await channel.close()


@dataclass(frozen=True)
class StageHealth:
    """One stage's health as the orchestrator sees it: a ServingStatus name, or why it is unknown."""

    stage: str
    address: str
    status: str

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


class GrpcStages:
    """``StageClients`` over gRPC: the STT, LLM and TTS services, with the configured deadlines."""

    def __init__(self, config: OrchestratorConfig) -> None:
        tls_ca = (read_config_file(config.stage_tls_ca, "--stage-tls-ca")
                  if config.stage_tls_ca else None)
        token = (read_token_file(config.stage_auth_token_file, "--stage-auth-token-file")
                 if config.stage_auth_token_file else "")
        wait = config.stage_retry_wait_s
        self.stt = StageChannel("stt", config.stt_address, tls_ca=tls_ca, token=token, retry_wait_s=wait)
        self.llm = StageChannel("llm", config.llm_address, tls_ca=tls_ca, token=token, retry_wait_s=wait)
        self.tts = StageChannel("tts", config.tts_address, tls_ca=tls_ca, token=token, retry_wait_s=wait)
        self.deadlines: Deadlines = config.deadlines

    async def health(self) -> list[StageHealth]:
        """Health of each stage, STT, LLM, TTS (never raises)."""
        return list(await asyncio.gather(
            *(s.health(self.deadlines.control_s) for s in (self.stt, self.llm, self.tts))))

    async def close(self) -> None:
        for stage in (self.stt, self.llm, self.tts):
            await stage.close()

    async def transcribe(self, audio: bytes, fmt: InputFormat, language: str) -> Transcription:
        """Transcribe a whole utterance."""
        request = stt_pb2.TranscribeRequest(
            config=stt_pb2.RecognitionConfig(format=_audio_format(fmt), language=language),
            audio=audio,
        )
        reply = await self.stt.unary(
            _Deadline(self.deadlines.stt_s),
            lambda options: stt_pb2_grpc.SpeechToTextStub(self.stt.channel).Transcribe(
                request, metadata=self.stt.metadata, **options))
        return _transcription(reply)

    async def generate(self, messages: Sequence[ChatMessage], options: GenerateOptions
                       ) -> AsyncGenerator[str | ToolCallDelta | LlmSummary, None]:
        """Text deltas (str) and tool-call deltas as they come, then one LlmSummary."""
        request = llm_pb2.GenerateRequest(
            messages=[_chat_message(m) for m in messages],
            providers=list(options.providers), no_cache=options.no_cache,
            tools=[llm_pb2.ToolDefinition(name=t.name, description=t.description,
                                          parameters_json=t.parameters_json) for t in options.tools],
            tool_choice=options.tool_choice,
        )
        if options.sampling is not None:
            request.sampling.CopyFrom(_sampling(options.sampling))
        total, first_token = _Deadline(self.deadlines.llm_total_s), _Deadline(self.deadlines.llm_ttft_s)
        attempt = 1
        while True:
            call = llm_pb2_grpc.LanguageModelStub(self.llm.channel).Generate(
                request, metadata=self.llm.metadata, **self.llm.call_options(total, attempt))
            produced = False
            try:
                replies = call.__aiter__()
                try:
                    async with asyncio.timeout(first_token.left()):
                        first = await anext(replies, None)
                except TimeoutError:
                    raise StageError("llm", "DEADLINE_EXCEEDED",
                                     f"no first token within {self.deadlines.llm_ttft_s:g} s",
                                     self.llm.address) from None
                while first is not None:
                    produced = True
                    event = first.WhichOneof("event")
                    if event == "text_delta":
                        yield first.text_delta
                    elif event == "tool_call_delta":
                        d = first.tool_call_delta
                        yield ToolCallDelta(d.index, d.id, d.name, d.arguments_delta)
                    elif event == "summary":
                        yield _summary(first.summary)
                    first = await anext(replies, None)
                return
            except grpc.aio.AioRpcError as exc:
                if not produced and await self.llm.retry_after(exc, attempt, first_token):
                    attempt += 1
                    continue
                raise await self.llm.error(exc) from exc
            finally:
                call.cancel()  # no-op when the call already ended

    async def synthesize(self, text: str, voice: str, sample_rate_hz: int
                         ) -> AsyncGenerator[PcmFormat | bytes, None]:
        """The output format (PcmFormat) first, then PCM s16le audio chunks."""
        request = tts_pb2.SynthesizeRequest(
            text=text, voice=voice,
            output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE,
                                                sample_rate_hz=sample_rate_hz, channels=1),
        )
        deadline = _Deadline(self.deadlines.tts_s)
        announced: PcmFormat | None = None
        attempt = 1
        while True:
            call = tts_pb2_grpc.TextToSpeechStub(self.tts.channel).Synthesize(
                request, metadata=self.tts.metadata, **self.tts.call_options(deadline, attempt))
            spoken = False
            try:
                async for reply in call:
                    event = reply.WhichOneof("event")
                    if event == "format":
                        if reply.format.encoding != audio_pb2.PCM_S16LE:
                            raise StageError("tts", "INTERNAL", "asked for PCM_S16LE audio, got "
                                             + audio_pb2.AudioEncoding.Name(reply.format.encoding),
                                             self.tts.address)
                        fmt = PcmFormat(reply.format.sample_rate_hz, reply.format.channels or 1)
                        if announced is None:
                            announced = fmt
                            yield fmt
                        elif fmt != announced:  # a retry's replica answered differently
                            raise StageError("tts", "INTERNAL", f"retried sentence came as {fmt}, "
                                             f"first as {announced}", self.tts.address)
                    elif event == "audio" and reply.audio.data:
                        spoken = True
                        yield reply.audio.data
                return
            except grpc.aio.AioRpcError as exc:
                if not spoken and await self.tts.retry_after(exc, attempt, deadline):
                    attempt += 1
                    continue
                raise await self.tts.error(exc) from exc
            finally:
                call.cancel()

    async def list_voices(self) -> list[str]:
        """Names of the TTS server's voices, the default first."""
        reply = await self.tts.unary(
            _Deadline(self.deadlines.control_s),
            lambda options: tts_pb2_grpc.TextToSpeechStub(self.tts.channel).ListVoices(
                tts_pb2.ListVoicesRequest(), metadata=self.tts.metadata, **options))
        return [v.name for v in reply.voices]

    async def listen(self, inputs: AsyncIterator[ListenInput], fmt: InputFormat, language: str,
                     detection: TurnDetection) -> AsyncGenerator[ListenEvent, None]:
        """The STT service's Listen stream (no deadline: it lasts the conversation)."""
        config = stt_pb2.ListenConfig(
            recognition=stt_pb2.RecognitionConfig(format=_audio_format(fmt), language=language),
            turn=stt_pb2.TurnConfig(
                detector=_DETECTORS[detection.detector],
                complete_silence_ms=detection.complete_silence_ms,
                incomplete_silence_ms=detection.incomplete_silence_ms,
                silence_ms=detection.silence_ms))

        wait_s = self.stt.retry_wait_s
        if wait_s > 0 and not await self.stt.wait_ready(wait_s):
            raise StageNotReady("stt", f"no speech recogniser ready within {wait_s:g} s",
                                self.stt.address)

        async def requests() -> AsyncIterator[stt_pb2.ListenRequest]:
            yield stt_pb2.ListenRequest(config=config)
            async for item in inputs:
                if isinstance(item, bytes):
                    yield stt_pb2.ListenRequest(audio=item)
                elif isinstance(item, EndTurnSignal):
                    yield stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn())
                else:
                    yield stt_pb2.ListenRequest(reply_started=stt_pb2.ReplyStarted())

        call = stt_pb2_grpc.SpeechToTextStub(self.stt.channel).Listen(
            requests(), wait_for_ready=False, metadata=self.stt.metadata)
        status = ServerStatus(call)
        try:
            async for reply in call:
                event = _listen_event(reply)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise await self.stt.error(await status.error_for(exc, wait_s=_STATUS_WAIT_S)) from exc
        finally:
            call.cancel()


#: How long a call whose status a racing write overwrote waits for the server's own, seconds.
_STATUS_WAIT_S = 1.0


class _Deadline:
    """A time limit shared by a call and its retry: ``left()`` is what remains of it."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._end = self._loop.time() + seconds

    def left(self) -> float:
        return max(0.001, self._end - self._loop.time())


_DETECTORS = {"": stt_pb2.TURN_DETECTOR_UNSPECIFIED, "smart_turn": stt_pb2.SMART_TURN,
              "silero_vad": stt_pb2.SILERO_VAD, "energy_vad": stt_pb2.ENERGY_VAD}
_END_REASONS = {stt_pb2.COMPLETE: "complete", stt_pb2.SILENCE: "silence", stt_pb2.CLIENT: "client",
                stt_pb2.STREAM_END: "stream_end"}


def _transcription(r: stt_pb2.TranscribeResponse) -> Transcription:
    return Transcription(text=r.text.strip(), language=r.language, audio_seconds=r.audio_seconds,
                         processing_ms=r.processing_ms)


def _listen_event(reply: stt_pb2.ListenResponse) -> ListenEvent | None:
    kind = reply.WhichOneof("event")
    if kind == "speech_started":
        e = reply.speech_started
        return SpeechStart(e.turn, e.at_s, e.continues_turn)
    if kind == "speech_paused":
        p = reply.speech_paused
        return SpeechPause(p.turn, p.end_of_speech_s, p.complete_probability, p.silence_limit_ms)
    if kind == "interim":
        i = reply.interim
        return InterimText(i.turn, i.result.text.strip(), i.result.language, i.audio_end_s, i.at_pause)
    if kind == "end_of_turn":
        t = reply.end_of_turn
        return TurnEnd(t.turn, t.end_of_speech_s, t.ended_at_s, _END_REASONS.get(t.reason, "silence"),
                       t.complete_probability, _transcription(t.transcript))
    return None  # a newer server's event this client does not know


def _audio_format(fmt: InputFormat) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=audio_pb2.AudioEncoding.Value(fmt.encoding),
                                 sample_rate_hz=fmt.sample_rate_hz, channels=fmt.channels)


def _chat_message(m: ChatMessage) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=m.role, content=m.content, tool_call_id=m.tool_call_id,
                               tool_calls=[llm_pb2.ToolCall(id=c.id, name=c.name,
                                                            arguments_json=c.arguments_json)
                                           for c in m.tool_calls])


def _sampling(s: Sampling) -> llm_pb2.SamplingOptions:
    out = llm_pb2.SamplingOptions(max_tokens=s.max_tokens, stop=list(s.stop))
    if s.temperature is not None:
        out.temperature = s.temperature
    if s.top_p is not None:
        out.top_p = s.top_p
    if s.seed is not None:
        out.seed = s.seed
    return out


def _summary(s: llm_pb2.GenerateSummary) -> LlmSummary:
    return LlmSummary(
        provider=s.provider, model=s.model, ttft_ms=s.time_to_first_token_ms, total_ms=s.total_ms,
        cache_hit=s.cache_hit, finish_reason=s.finish_reason,
        input_tokens=s.usage.prompt_tokens, output_tokens=s.usage.completion_tokens,
    )
