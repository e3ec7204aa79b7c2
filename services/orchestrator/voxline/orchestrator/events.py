"""What flows through a Converse session, as plain dataclasses (protobuf stays in servicer.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from voxline.orchestrator.domain import GenerateOptions, InputFormat, Sampling

if TYPE_CHECKING:
    from voxline.orchestrator.tools.toolbox import Toolbox

# --- session input ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """The client's session config, with the server's defaults filled in."""

    input_format: InputFormat = dataclasses.field(default_factory=InputFormat)
    language: str = ""
    voice: str = ""
    #: "PCM_S16LE" or "WAV".
    output_encoding: str = "PCM_S16LE"
    #: 0: the voice's native rate.
    output_sample_rate_hz: int = 0
    system_prompt: str = ""
    llm_providers: tuple[str, ...] = ()
    sampling: Sampling | None = None
    no_cache: bool = False
    server_vad: bool = False
    vad_silence_ms: int = 0
    #: server_vad: "smart_turn", "silero_vad", "energy_vad" or "" (the STT service's default).
    turn_detector: str = ""
    turn_complete_silence_ms: int = 0
    turn_incomplete_silence_ms: int = 0
    #: server_vad: start the reply at each pause, holding its audio until the turn ends.
    speculative_reply: bool = True
    #: The tools of this session (the operator's MCP tools and the client's own); None: no tools.
    tools: Toolbox | None = dataclasses.field(default=None, compare=False)

    @property
    def generate_options(self) -> GenerateOptions:
        """What the LLM is asked for on every turn of the session."""
        return GenerateOptions(sampling=self.sampling, providers=self.llm_providers, no_cache=self.no_cache)


@dataclasses.dataclass(frozen=True)
class ConfigRequest:
    settings: SessionSettings


@dataclasses.dataclass(frozen=True)
class AudioRequest:
    data: bytes


@dataclasses.dataclass(frozen=True)
class EndOfUtteranceRequest:
    pass


@dataclasses.dataclass(frozen=True)
class TextRequest:
    text: str


Request = ConfigRequest | AudioRequest | EndOfUtteranceRequest | TextRequest

# --- session output --------------------------------------------------------------------------

COMPLETED = "completed"
INTERRUPTED = "interrupted"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class TranscriptEvent:
    turn: int
    text: str
    language: str


@dataclasses.dataclass(frozen=True)
class InterimTranscriptEvent:
    """server_vad: the user's words so far, while they speak (not final)."""

    turn: int
    text: str
    language: str


@dataclasses.dataclass(frozen=True)
class TextDeltaEvent:
    turn: int
    delta: str


@dataclasses.dataclass(frozen=True)
class AudioFormatEvent:
    turn: int
    #: "PCM_S16LE" or "WAV".
    encoding: str
    sample_rate_hz: int
    channels: int


@dataclasses.dataclass(frozen=True)
class AudioEvent:
    turn: int
    data: bytes


@dataclasses.dataclass
class TurnMetrics:
    """Latency and outcome of one turn; times in ms from the end of the utterance unless noted."""

    stt_ms: float = 0.0
    llm_ttft_ms: float = 0.0
    llm_total_ms: float = 0.0
    tts_first_audio_ms: float = 0.0
    time_to_first_audio_ms: float = 0.0
    total_ms: float = 0.0
    trace_id: str = ""
    llm_provider: str = ""
    cache_hit: bool = False
    status: str = COMPLETED
    sentences: int = 0
    reply_audio_seconds: float = 0.0
    tts_total_ms: float = 0.0
    error: str = ""
    #: server_vad: the last voiced frame to the first reply audio sent (0: unknown).
    end_of_speech_to_first_audio_ms: float = 0.0
    #: server_vad: the last voiced frame to the end of the turn (the silence waited).
    endpointing_ms: float = 0.0
    speculative_starts: int = 0
    speculative_hits: int = 0
    speculative_misses: int = 0
    #: LLM output (deltas, or tokens when the reply finished) of cancelled speculative replies.
    speculative_tokens_wasted: int = 0
    #: Tool calls made in the turn, and the time spent waiting for them (rounds, not calls), ms.
    tool_calls: int = 0
    tool_ms: float = 0.0


@dataclasses.dataclass(frozen=True)
class MetricsEvent:
    turn: int
    metrics: TurnMetrics


@dataclasses.dataclass(frozen=True)
class ClientToolCallEvent:
    """The LLM called one of the client's own tools: the client runs it and answers."""

    turn: int
    id: str
    name: str
    arguments_json: str


@dataclasses.dataclass(frozen=True)
class ToolCallCancelledEvent:
    """A client tool call is no longer wanted ("interrupted", "timed out")."""

    turn: int
    id: str
    reason: str


Event = (TranscriptEvent | InterimTranscriptEvent | TextDeltaEvent | AudioFormatEvent | AudioEvent
         | MetricsEvent | ClientToolCallEvent | ToolCallCancelledEvent)
