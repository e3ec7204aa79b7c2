"""A Converse client: one conversation stream, turn by turn (``voxline talk``, ``demo``, the bench)
or step by step (the tests): the one Converse client helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import grpc

from voxline.common.call_status import ServerStatus
from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

#: Audio chunk size sent on the stream (a real client would send ~20-100 ms frames; the size only
#: needs to stay well under the message limit).
CHUNK_BYTES = 32 * 1024


#: How long a failed write or read waits for the server's own status, seconds.
STATUS_WAIT_S = 5.0


class ConverseError(RuntimeError):
    """The stream ended badly or the orchestrator could not be reached."""


class OrchestratorUnreachable(ConverseError):
    """Nothing answers at the address."""


@dataclass
class TurnResult:
    """What one turn produced."""

    turn: int = 0
    transcript: str = ""
    language: str = ""
    reply_text: str = ""
    #: Reply audio as raw PCM16 little-endian (container headers stripped).
    pcm: bytes = b""
    sample_rate: int = 0
    channels: int = 1
    metrics: dict[str, object] = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        if not self.sample_rate:
            return 0.0
        return len(self.pcm) / (2 * max(1, self.channels) * self.sample_rate)

    @property
    def status(self) -> str:
        value = self.metrics.get("status", 0)
        if isinstance(value, int):
            return voice_pb2.TurnStatus.Name(voice_pb2.TurnStatus.ValueType(value))
        return str(value)


def metrics_to_dict(metrics: voice_pb2.TurnMetrics) -> dict[str, object]:
    """Every TurnMetrics field by name (enum as its number)."""
    return {f.name: getattr(metrics, f.name) for f in metrics.DESCRIPTOR.fields}


def session_config(*, language: str = "", voice: str = "", llm_providers: list[str] | None = None,
                   system_prompt: str = "", no_cache: bool = False, input_rate: int = 0,
                   input_channels: int = 0) -> voice_pb2.SessionConfig:
    """A SessionConfig asking for raw PCM16 reply audio; raw PCM input when ``input_rate`` is set."""
    input_format = audio_pb2.AudioFormat()
    if input_rate:
        input_format = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=input_rate,
                                             channels=input_channels or 1)
    return voice_pb2.SessionConfig(
        input_format=input_format, language=language, voice=voice,
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE),
        system_prompt=system_prompt, llm_providers=llm_providers or [], no_cache=no_cache,
    )


def _strip_wav_header(data: bytes) -> bytes:
    # A server that sent WAV anyway: drop the streaming header (44 bytes, sizes 0xFFFFFFFF).
    return data[44:] if data[:4] == b"RIFF" else data


class Conversation:
    """One Converse stream. ``async with Conversation(...) as conv: result = await conv.turn(...)``.

    Step by step: ``Conversation.on_channel(channel)`` opens the call on a channel the caller owns
    and sends nothing; then ``send_config``, ``send_text``, ``send_audio``,
    ``send_end_of_utterance``, ``read``, ``read_until`` and ``error``.
    """

    def __init__(self, address: str, config: voice_pb2.SessionConfig | None = None, *,
                 connect_timeout_s: float = 5.0, credentials: grpc.ChannelCredentials | None = None,
                 token: str = "", read_timeout_s: float | None = None) -> None:
        """``credentials``: dial over TLS (``grpc.ssl_channel_credentials(...)``; None: plaintext);
        ``token``: sent as ``authorization: Bearer <token>`` (empty: no token); ``config``: sent
        first on entering (None: send it with ``send_config``); ``read_timeout_s``: longest wait
        for one event (None: no limit)."""
        self.address = address
        self._config = config
        self._connect_timeout_s = connect_timeout_s
        self._credentials = credentials
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._read_timeout_s = read_timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._status: ServerStatus | None = None

    @classmethod
    def on_channel(cls, channel: grpc.aio.Channel, *, read_timeout_s: float | None = None,
                   token: str = "") -> Conversation:
        """A Converse call on ``channel`` (which the caller closes), nothing sent yet."""
        conversation = cls("", read_timeout_s=read_timeout_s, token=token)
        conversation._open(channel)
        return conversation

    def _open(self, channel: grpc.aio.Channel) -> None:
        self._call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse(metadata=self._metadata)
        self._status = ServerStatus(self._call)

    @property
    def call(self) -> grpc.aio.StreamStreamCall:
        """The Converse call (to half-close, cancel or read its status)."""
        if self._call is None:
            raise ConverseError("the conversation is not open")
        return self._call

    async def __aenter__(self) -> Conversation:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=options)
        try:
            await asyncio.wait_for(self._connect(), self._connect_timeout_s)
        except TimeoutError:
            await self._channel.close()
            raise OrchestratorUnreachable(
                f"cannot reach the orchestrator at {self.address} "
                f"(no connection within {self._connect_timeout_s:g} s)") from None
        except OrchestratorUnreachable:
            await self._channel.close()
            raise
        self._open(self._channel)
        if self._config is not None:
            await self.send_config(self._config)
        return self

    async def _write(self, call: grpc.aio.StreamStreamCall, request: voice_pb2.ConverseRequest) -> None:
        # The server may end the call while a request is being written (say INVALID_ARGUMENT for
        # the config, or UNAUTHENTICATED): raise its status, never the write's.
        assert self._status is not None
        try:
            await call.write(request)
        except asyncio.InvalidStateError:
            raise await self._status.error_for(None, wait_s=STATUS_WAIT_S, call=call) from None
        except grpc.aio.AioRpcError as exc:
            raise await self._status.error_for(exc, wait_s=STATUS_WAIT_S, call=call) from None

    async def _connect(self) -> None:
        # Fail on the first failed attempt (connection refused, unknown host) instead of letting
        # gRPC retry with back-off until the timeout: nobody is listening, say so at once.
        assert self._channel is not None
        state = self._channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise OrchestratorUnreachable(f"cannot connect to the orchestrator at {self.address}")
            await self._channel.wait_for_state_change(state)
            state = self._channel.get_state(try_to_connect=True)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._call is not None:
            if exc is None:
                try:
                    await self._call.done_writing()
                    while await self._call.read() is not grpc.aio.EOF:
                        pass
                except grpc.aio.AioRpcError:
                    pass  # the turns are done; a late stream error changes nothing for the caller
            else:
                self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    # -- step by step ----------------------------------------------------------------------------
    async def send_config(self, config: voice_pb2.SessionConfig) -> None:
        await self._write(self.call, voice_pb2.ConverseRequest(config=config))

    async def send_text(self, text: str) -> None:
        await self._write(self.call, voice_pb2.ConverseRequest(text=text))

    async def send_audio(self, audio: bytes, chunk_bytes: int = CHUNK_BYTES) -> None:
        """``audio`` in messages of ``chunk_bytes``."""
        for start in range(0, len(audio), chunk_bytes):
            await self._write(self.call, voice_pb2.ConverseRequest(audio=audio[start:start + chunk_bytes]))

    async def send_end_of_utterance(self) -> None:
        await self._write(self.call, voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))

    async def read(self) -> voice_pb2.ConverseResponse | None:
        """The next event, or None when the stream ended; a failed call raises AioRpcError;
        TimeoutError after ``read_timeout_s``."""
        call = self.call
        try:
            async with asyncio.timeout(self._read_timeout_s):
                response = await call.read()
        except grpc.aio.AioRpcError as exc:
            assert self._status is not None
            raise await self._status.error_for(exc, wait_s=STATUS_WAIT_S, call=call) from None
        if response is grpc.aio.EOF:
            return None
        assert isinstance(response, voice_pb2.ConverseResponse)
        return response

    async def read_until(self, kind: str) -> list[voice_pb2.ConverseResponse]:
        """Events up to and including the first of ``kind`` (a ConverseResponse ``event`` name)."""
        events: list[voice_pb2.ConverseResponse] = []
        while True:
            response = await self.read()
            if response is None:
                raise ConverseError(f"the orchestrator ended the stream before {kind!r}")
            events.append(response)
            if response.WhichOneof("event") == kind:
                return events

    async def error(self) -> grpc.aio.AioRpcError:
        """Read until the call fails; its error (ConverseError if it ends without one)."""
        try:
            while await self.read() is not None:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
        raise ConverseError("the call ended without an error")

    # -- turn by turn --------------------------------------------------------------------------
    async def turn(self, *, audio: bytes | None = None, text: str | None = None,
                   on_transcript: Callable[[str], None] | None = None,
                   on_text: Callable[[str], None] | None = None) -> TurnResult:
        """Send one utterance (audio bytes then end of utterance, or a text turn) and collect the
        reply until its metrics event. gRPC errors propagate as grpc.aio.AioRpcError."""
        if (audio is None) == (text is None):
            raise ValueError("give either audio or text")
        if text is not None:
            await self.send_text(text)
        else:
            assert audio is not None
            await self.send_audio(audio)
            await self.send_end_of_utterance()
        result = TurnResult()
        audio_parts: list[bytes] = []
        encoding = audio_pb2.PCM_S16LE
        while True:
            response = await self.read()
            if response is None:
                raise ConverseError("the orchestrator ended the stream before the turn's metrics")
            result.turn = response.turn
            event = response.WhichOneof("event")
            if event == "transcript":
                result.transcript = response.transcript.text
                result.language = response.transcript.language
                if on_transcript is not None:
                    on_transcript(result.transcript)
            elif event == "assistant_text":
                result.reply_text += response.assistant_text.delta
                if on_text is not None:
                    on_text(response.assistant_text.delta)
            elif event == "audio_format":
                encoding = response.audio_format.encoding
                result.sample_rate = response.audio_format.sample_rate_hz
                result.channels = response.audio_format.channels or 1
            elif event == "audio":
                audio_parts.append(response.audio)
            elif event == "metrics":
                result.metrics = metrics_to_dict(response.metrics)
                break
        pcm = b"".join(audio_parts)
        result.pcm = _strip_wav_header(pcm) if encoding == audio_pb2.WAV else pcm
        return result


def describe_rpc_error(error: grpc.aio.AioRpcError, address: str) -> str:
    """A one-line, user-facing message for a failed call."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "refused" in details.lower()):
        return (f"cannot reach the orchestrator at {address} (UNAVAILABLE: {details}); "
                "is `voxline up` running?")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{code.name}: {details} (give the token with --auth-token-file or VOXLINE_AUTH_TOKEN)"
    if code == grpc.StatusCode.INTERNAL and details == "Internal error from Core":
        # gRPC Python replaces the server's status with this one when a write loses the race with
        # the server ending the stream, e.g. rejecting a call without a token (grpc/grpc#36066).
        return ("the orchestrator ended the stream while the request was being sent, and gRPC lost "
                "its status (grpc/grpc#36066): check the token (--auth-token-file or "
                "VOXLINE_AUTH_TOKEN) and the session settings")
    return f"{code.name}: {details}"
