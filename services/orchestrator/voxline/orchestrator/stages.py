"""The gRPC edge towards the three stages: STT, LLM and TTS clients returning plain values.

Every call uses ``wait_for_ready=False``: a stage that is down fails the call at once with
UNAVAILABLE instead of hanging until a deadline. Failures become ``StageError``, whose message
names the stage and its address ("UNAVAILABLE: llm stage unavailable at 127.0.0.1:50052: ...").

Streaming calls are async generators that cancel their gRPC call when closed or cancelled, so a
barge-in reaches the service (its handler sees the cancellation). Consume them with
``contextlib.aclosing``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.common.config import read_config_file, read_token_file
from voxline.common.errors import VoxlineError
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
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
]


class StageError(VoxlineError):
    """A stage call failed; ``code_name`` is the gRPC status the failure maps to."""

    def __init__(self, stage: str, address: str, code_name: str, detail: str) -> None:
        self.stage = stage
        self.address = address
        self.code_name = code_name
        self.detail = detail
        what = {"UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "deadline exceeded"}.get(
            code_name, "failed")
        super().__init__(f"{code_name}: {stage} stage {what} at {address}: {detail}")


@dataclasses.dataclass(frozen=True)
class InputFormat:
    """Format of the user's audio: encoding is an AudioEncoding name ("PCM_S16LE", "WAV", ...)."""

    encoding: str = "AUDIO_ENCODING_UNSPECIFIED"
    sample_rate_hz: int = 0
    channels: int = 0


@dataclasses.dataclass(frozen=True)
class Transcription:
    """The STT result the orchestrator uses."""

    text: str
    language: str
    audio_seconds: float
    processing_ms: float


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to the LLM."""

    role: str
    content: str


@dataclasses.dataclass(frozen=True)
class Sampling:
    """LLM sampling options (None: the server's default)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class LlmSummary:
    """The LLM's closing summary."""

    provider: str
    model: str
    ttft_ms: float
    total_ms: float
    cache_hit: bool
    finish_reason: str
    input_tokens: int
    output_tokens: int


@dataclasses.dataclass(frozen=True)
class PcmFormat:
    """Format of TTS audio: PCM s16le at this rate and channel count."""

    sample_rate_hz: int
    channels: int


class StageChannel:
    """One stage's address and channel; a channel that failed to connect is replaced on demand.

    gRPC channels reconnect by themselves, but only after their backoff; replacing a channel that is
    not connected after a failure lets the next turn reach a stage that is back at once. The replaced
    channel is closed one replacement later (or at shutdown), so calls other sessions may still
    have queued on it are not cut short.
    """

    def __init__(self, stage: str, address: str, *, tls_ca: bytes | None = None,
                 token: str = "") -> None:
        self.stage = stage
        self.address = address
        self._tls_ca = tls_ca
        #: Call metadata carrying the bearer token (empty without one); pass it on every call.
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        self._channel = self._new_channel()
        self._retired: Any = None

    def _new_channel(self) -> Any:
        if self._tls_ca is None:
            return grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(root_certificates=self._tls_ca)
        return grpc.aio.secure_channel(self.address, credentials, options=_CHANNEL_OPTIONS)

    @property
    def channel(self) -> Any:
        return self._channel

    async def recover(self) -> None:
        """After a failed call: replace the channel unless it is connected (READY)."""
        if self._channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
            return  # the service itself answered with an error: the connection is fine
        if self._retired is not None:
            await self._retired.close()
        self._retired, self._channel = self._channel, self._new_channel()

    async def error(self, exc: grpc.aio.AioRpcError) -> StageError:
        """The StageError for a failed call (and channel recovery when it is needed)."""
        code = exc.code()
        await self.recover()
        detail = exc.details() or code.name
        return StageError(self.stage, self.address, code.name, detail)

    async def health(self, deadline_s: float) -> str:
        """The stage's overall health status name, or why it could not be read."""
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=deadline_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def close(self) -> None:
        for channel in (self._retired, self._channel):
            if channel is not None:
                await channel.close()


class Stages:
    """Clients of the STT, LLM and TTS services, with the configured deadlines."""

    def __init__(self, config: OrchestratorConfig) -> None:
        tls_ca = (read_config_file(config.stage_tls_ca, "--stage-tls-ca")
                  if config.stage_tls_ca else None)
        token = (read_token_file(config.stage_auth_token_file, "--stage-auth-token-file")
                 if config.stage_auth_token_file else "")
        self.stt = StageChannel("stt", config.stt_address, tls_ca=tls_ca, token=token)
        self.llm = StageChannel("llm", config.llm_address, tls_ca=tls_ca, token=token)
        self.tts = StageChannel("tts", config.tts_address, tls_ca=tls_ca, token=token)
        self.deadlines: Deadlines = config.deadlines

    async def health(self) -> dict[str, str]:
        """Health of each stage (never raises)."""
        stages = (self.stt, self.llm, self.tts)
        results = await asyncio.gather(*(s.health(self.deadlines.control_s) for s in stages))
        return {s.stage: r for s, r in zip(stages, results, strict=True)}

    async def close(self) -> None:
        for stage in (self.stt, self.llm, self.tts):
            await stage.close()

    async def transcribe(self, audio: bytes, fmt: InputFormat, language: str) -> Transcription:
        """Transcribe a whole utterance."""
        request = stt_pb2.TranscribeRequest(
            config=stt_pb2.RecognitionConfig(format=_audio_format(fmt), language=language),
            audio=audio,
        )
        stub = stt_pb2_grpc.SpeechToTextStub(self.stt.channel)
        try:
            reply = await stub.Transcribe(request, timeout=self.deadlines.stt_s, wait_for_ready=False,
                                          metadata=self.stt.metadata)
        except grpc.aio.AioRpcError as exc:
            raise await self.stt.error(exc) from exc
        return Transcription(text=reply.text.strip(), language=reply.language,
                             audio_seconds=reply.audio_seconds, processing_ms=reply.processing_ms)

    async def generate(self, messages: Sequence[ChatMessage], sampling: Sampling | None,
                       providers: Sequence[str], no_cache: bool) -> AsyncGenerator[str | LlmSummary, None]:
        """Text deltas (str) as they come, then one LlmSummary."""
        request = llm_pb2.GenerateRequest(
            messages=[llm_pb2.ChatMessage(role=m.role, content=m.content) for m in messages],
            providers=list(providers), no_cache=no_cache,
        )
        if sampling is not None:
            request.sampling.CopyFrom(_sampling(sampling))
        call = llm_pb2_grpc.LanguageModelStub(self.llm.channel).Generate(
            request, timeout=self.deadlines.llm_total_s, wait_for_ready=False,
            metadata=self.llm.metadata)
        try:
            replies = call.__aiter__()
            try:
                async with asyncio.timeout(self.deadlines.llm_ttft_s):
                    first = await anext(replies, None)
            except TimeoutError:
                raise StageError("llm", self.llm.address, "DEADLINE_EXCEEDED",
                                 f"no first token within {self.deadlines.llm_ttft_s:g} s") from None
            while first is not None:
                event = first.WhichOneof("event")
                if event == "text_delta":
                    yield first.text_delta
                elif event == "summary":
                    yield _summary(first.summary)
                first = await anext(replies, None)
        except grpc.aio.AioRpcError as exc:
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
        call = tts_pb2_grpc.TextToSpeechStub(self.tts.channel).Synthesize(
            request, timeout=self.deadlines.tts_s, wait_for_ready=False, metadata=self.tts.metadata)
        try:
            async for reply in call:
                event = reply.WhichOneof("event")
                if event == "format":
                    if reply.format.encoding != audio_pb2.PCM_S16LE:
                        raise StageError("tts", self.tts.address, "INTERNAL",
                                         "asked for PCM_S16LE audio, got "
                                         + audio_pb2.AudioEncoding.Name(reply.format.encoding))
                    yield PcmFormat(reply.format.sample_rate_hz, reply.format.channels or 1)
                elif event == "audio" and reply.audio.data:
                    yield reply.audio.data
        except grpc.aio.AioRpcError as exc:
            raise await self.tts.error(exc) from exc
        finally:
            call.cancel()

    async def list_voices(self) -> list[str]:
        """Names of the TTS server's voices, the default first."""
        stub = tts_pb2_grpc.TextToSpeechStub(self.tts.channel)
        try:
            reply = await stub.ListVoices(tts_pb2.ListVoicesRequest(),
                                          timeout=self.deadlines.control_s, wait_for_ready=False,
                                          metadata=self.tts.metadata)
        except grpc.aio.AioRpcError as exc:
            raise await self.tts.error(exc) from exc
        return [v.name for v in reply.voices]


def _audio_format(fmt: InputFormat) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=audio_pb2.AudioEncoding.Value(fmt.encoding),
                                 sample_rate_hz=fmt.sample_rate_hz, channels=fmt.channels)


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
