"""The orchestrator's domain: what it asks of the three stages, as plain dataclasses, and the seam.

``StageClients`` is the one thing a turn or a session needs from the outside world. The gRPC
implementation (``grpc_stages.GrpcStages``) sits behind it; tests and benchmarks plug in-memory
fakes (``voxline.testing.stage_fakes``) into the same place, so the turn logic runs without sockets.
No grpc and no protobuf imports here.

Growing the seam: a new capability is a new method here, in domain types, implemented by
``GrpcStages`` and by the in-memory fakes. Streams are async generators (closed with
``contextlib.aclosing``; closing or cancelling one cancels the call in the service). A streaming
STT, for example, would be ``stream_transcribe(audio: AsyncIterator[bytes], fmt, language)
-> AsyncGenerator[SpeechEvent, None]`` with ``SpeechEvent`` a union of dataclasses defined here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Protocol

from voxline.common.errors import VoxlineError

# --- what flows to and from the stages ---------------------------------------------------------


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
class ToolCall:
    """One complete tool call the LLM asked for."""

    id: str
    name: str
    arguments_json: str


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to the LLM: an "assistant" message may carry the tool
    calls it made; a "tool" message is the result of the call ``tool_call_id``."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the LLM: its JSON Schema parameters as JSON text ("" : none)."""

    name: str
    description: str = ""
    parameters_json: str = ""


@dataclasses.dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call (``id`` and ``name`` on a call's first piece)."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """LLM sampling options (None: the server's default)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """How the LLM should answer: sampling, provider order (empty: the gateway's), cache bypass,
    and the tools it may call ("auto", "none", "required" or a tool name as ``tool_choice``)."""

    sampling: Sampling | None = None
    providers: tuple[str, ...] = ()
    no_cache: bool = False
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = ""


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


# --- turn-taking: the STT service's Listen stream ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class TurnDetection:
    """How the STT service ends a turn ("" and 0: its defaults)."""

    #: "smart_turn", "silero_vad", "energy_vad" or "" (the service's default).
    detector: str = ""
    complete_silence_ms: int = 0
    incomplete_silence_ms: int = 0
    silence_ms: int = 0


@dataclasses.dataclass(frozen=True)
class EndTurnSignal:
    """To Listen: the client marked the end of the turn."""


@dataclasses.dataclass(frozen=True)
class ReplyStartedSignal:
    """To Listen: the assistant started speaking; speech from now on is a new turn (barge-in)."""


#: What the orchestrator sends on a Listen stream: raw PCM chunks and the two signals.
ListenInput = bytes | EndTurnSignal | ReplyStartedSignal


@dataclasses.dataclass(frozen=True)
class SpeechStart:
    """The user started (or resumed) speaking; times are seconds of stream audio."""

    turn: int
    at_s: float
    #: Resumed speech of a turn that paused or ended with no reply started: the same turn.
    continues_turn: bool


@dataclasses.dataclass(frozen=True)
class SpeechPause:
    """The user paused after speaking."""

    turn: int
    #: The last voiced frame: the real end of speech.
    end_of_speech_s: float
    #: P(turn complete) from Smart Turn; -1 for a VAD-only detector.
    complete_probability: float
    silence_limit_ms: int


@dataclasses.dataclass(frozen=True)
class InterimText:
    """A transcript of the turn so far; ``at_pause``: all its speech, up to the current pause."""

    turn: int
    text: str
    language: str
    audio_end_s: float
    at_pause: bool


@dataclasses.dataclass(frozen=True)
class TurnEnd:
    """The turn ended (speech may still continue it until a reply starts)."""

    turn: int
    end_of_speech_s: float
    ended_at_s: float
    #: "complete", "silence", "client" or "stream_end".
    reason: str
    complete_probability: float
    transcription: Transcription


ListenEvent = SpeechStart | SpeechPause | InterimText | TurnEnd


# --- failures ----------------------------------------------------------------------------------

_WHAT = {"UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "deadline exceeded"}


class StageError(VoxlineError):
    """A stage call failed; ``code_name`` is the gRPC status the failure maps to for the client.

    The message, which the client sees, names the stage but not where it runs: ``address`` (and
    the transport's own text, which quotes addresses) stays in the orchestrator's log
    ("UNAVAILABLE: llm stage unavailable: ...").
    """

    def __init__(self, stage: str, code_name: str, detail: str, address: str = "") -> None:
        self.stage = stage
        self.code_name = code_name
        self.detail = detail
        self.address = address
        shown = _ADDRESS.sub("(address)", detail)
        super().__init__(f"{code_name}: {stage} stage {_WHAT.get(code_name, 'failed')}: {shown}")



class StageNotReady(StageError):
    """No replica of the stage became ready within the retry wait (``--stage-retry-wait-s``): the
    outage outlasted what a call may wait for, so the caller gives up instead of waiting again."""

    def __init__(self, stage: str, detail: str, address: str = "") -> None:
        super().__init__(stage, "UNAVAILABLE", detail, address)

#: Socket addresses in gRPC's own error texts: ipv4:1.2.3.4:5, ipv6:[::1]:5, unix:/path, host:port.
_ADDRESS = re.compile(r"\b(?:ipv4|ipv6|unix|unix-abstract|dns):\S+?(?=[,;]?(?:\s|$))"
                      r"|\[[0-9A-Fa-f:.]+\]:\d+|\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b")


# --- the seam ----------------------------------------------------------------------------------


class StageClients(Protocol):
    """What a turn and a session need from STT, LLM and TTS. Failures raise ``StageError``."""

    async def transcribe(self, audio: bytes, fmt: InputFormat, language: str) -> Transcription:
        """Transcribe a whole utterance."""
        ...

    def generate(self, messages: Sequence[ChatMessage], options: GenerateOptions
                 ) -> AsyncGenerator[str | ToolCallDelta | LlmSummary, None]:
        """Text deltas (str) and tool-call deltas as they come, then one LlmSummary."""
        ...

    def synthesize(self, text: str, voice: str, sample_rate_hz: int
                   ) -> AsyncGenerator[PcmFormat | bytes, None]:
        """The output format (PcmFormat) first, then PCM s16le audio chunks."""
        ...

    async def list_voices(self) -> list[str]:
        """Names of the TTS voices, the default first."""
        ...

    def listen(self, inputs: AsyncIterator[ListenInput], fmt: InputFormat, language: str,
               detection: TurnDetection) -> AsyncGenerator[ListenEvent, None]:
        """Turn-taking over a conversation's raw PCM (STT's Listen stream): voice activity, interim
        transcripts and ends of turns, for as long as ``inputs`` goes on. Closing it ends the call."""
        ...
