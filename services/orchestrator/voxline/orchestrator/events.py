"""What flows through a Converse session, as plain dataclasses (protobuf stays in servicer.py)."""

from __future__ import annotations

import dataclasses

from voxline.orchestrator.domain import GenerateOptions, InputFormat, Sampling

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


@dataclasses.dataclass(frozen=True)
class MetricsEvent:
    turn: int
    metrics: TurnMetrics


Event = TranscriptEvent | TextDeltaEvent | AudioFormatEvent | AudioEvent | MetricsEvent
