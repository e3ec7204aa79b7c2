"""gRPC only: ConverseRequest → session requests, session events → ConverseResponse."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from voxline.common.errors import InvalidInput
from voxline.common.grpc_errors import translate_errors
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import InputFormat, Sampling, StageClients, ToolSpec
from voxline.orchestrator.events import (
    AudioEvent,
    AudioFormatEvent,
    AudioRequest,
    ClientToolCallEvent,
    ConfigRequest,
    EndOfUtteranceRequest,
    Event,
    InterimTranscriptEvent,
    MetricsEvent,
    Request,
    SessionSettings,
    TextDeltaEvent,
    TextRequest,
    ToolCallCancelledEvent,
    TranscriptEvent,
)
from voxline.orchestrator.session import ConverseSession
from voxline.orchestrator.tools.client_tools import session_toolbox
from voxline.orchestrator.tools.toolbox import Toolbox, ToolSource
from voxline.v1 import audio_pb2, stt_pb2, voice_pb2, voice_pb2_grpc

_OUTPUT_ENCODINGS = {
    audio_pb2.AUDIO_ENCODING_UNSPECIFIED: "PCM_S16LE",
    audio_pb2.PCM_S16LE: "PCM_S16LE",
    audio_pb2.WAV: "WAV",
}
_DETECTORS = {stt_pb2.TURN_DETECTOR_UNSPECIFIED: "", stt_pb2.SMART_TURN: "smart_turn",
              stt_pb2.SILERO_VAD: "silero_vad", stt_pb2.ENERGY_VAD: "energy_vad"}
#: Raw PCM input: sample rates and channel counts a session may declare.
MIN_INPUT_RATE, MAX_INPUT_RATE = 8_000, 48_000
MAX_INPUT_CHANNELS = 8
_STATUS = {"completed": voice_pb2.COMPLETED, "interrupted": voice_pb2.INTERRUPTED,
           "failed": voice_pb2.FAILED}


class VoiceAssistantServicer(voice_pb2_grpc.VoiceAssistantServicer):
    """The Converse stream."""

    def __init__(self, stages: StageClients, config: OrchestratorConfig,
                 tools: ToolSource | None = None) -> None:
        self._stages = stages
        self._config = config
        #: The operator's MCP servers (None: none configured); each session adds its own tools.
        self._tools = tools
        self._sessions: weakref.WeakSet[ConverseSession] = weakref.WeakSet()
        self._draining = False

    def drain(self) -> None:
        """Server shutdown: every stream finishes its turn and ends cleanly; new ones end at once."""
        self._draining = True
        for session in list(self._sessions):
            session.drain()

    @translate_errors
    async def Converse(self, request_iterator: AsyncIterator[voice_pb2.ConverseRequest],
                       context: Any) -> AsyncIterator[voice_pb2.ConverseResponse]:
        session = ConverseSession(self._stages, self._config)
        self._sessions.add(session)
        if self._draining:
            session.drain()
        async for event in session.events(_requests(request_iterator, self._toolbox)):
            yield _response(event)

    def _toolbox(self, config: voice_pb2.SessionConfig) -> Toolbox | None:
        specs = [ToolSpec(t.name, t.description, t.parameters_json) for t in config.tools]
        return session_toolbox(self._tools, specs, self._config.tools)


async def _requests(requests: AsyncIterator[voice_pb2.ConverseRequest],
                    toolbox: Callable[[voice_pb2.SessionConfig], Toolbox | None] | None = None
                    ) -> AsyncIterator[Request]:
    tools: Toolbox | None = None
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == "tool_result":
            # straight to the waiting tool call: the session's turn logic is not involved
            if tools is None or tools.client is None:
                raise InvalidInput("tool_result, but this conversation declared no client tools")
            result = request.tool_result
            tools.client.deliver(result.id, result.content, result.is_error)
        elif kind == "config":
            settings = _settings(request.config)
            if toolbox is not None and tools is None:
                tools = toolbox(request.config)
                settings = dataclasses.replace(settings, tools=tools)
            yield ConfigRequest(settings)
        elif kind == "audio":
            yield AudioRequest(request.audio)
        elif kind == "end_of_utterance":
            yield EndOfUtteranceRequest()
        elif kind == "text":
            yield TextRequest(request.text)
        else:
            raise InvalidInput("empty ConverseRequest: set one of config, audio, end_of_utterance, "
                               "text, tool_result")


def _encoding_name(value: int, field: str) -> str:
    """The AudioEncoding name of ``value``; INVALID_ARGUMENT for a number the enum does not have."""
    try:
        return audio_pb2.AudioEncoding.Name(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput(f"{field}.encoding {value} is not an AudioEncoding value") from None


def _settings(c: voice_pb2.SessionConfig) -> SessionSettings:
    out, fmt = c.output_format, c.input_format
    input_encoding = _encoding_name(fmt.encoding, "input_format")
    if out.encoding not in _OUTPUT_ENCODINGS:
        raise InvalidInput("output_format.encoding must be PCM_S16LE or WAV, got "
                           + _encoding_name(out.encoding, "output_format"))
    if out.sample_rate_hz < 0 or fmt.sample_rate_hz < 0:
        raise InvalidInput("sample_rate_hz must be >= 0")
    if out.channels < 0 or out.channels > 1:
        raise InvalidInput("reply audio is mono: output_format.channels must be 0 or 1")
    # Raw PCM is sized from its declared rate and channels: keep them sane (2e9 Hz × 8 channels
    # once made a 120 MiB buffer look like a few seconds of speech).
    if fmt.sample_rate_hz and not MIN_INPUT_RATE <= fmt.sample_rate_hz <= MAX_INPUT_RATE:
        raise InvalidInput(f"input_format.sample_rate_hz {fmt.sample_rate_hz} is outside "
                           f"{MIN_INPUT_RATE}..{MAX_INPUT_RATE}")
    if not 0 <= fmt.channels <= MAX_INPUT_CHANNELS:
        raise InvalidInput(f"input_format.channels {fmt.channels} is outside 0..{MAX_INPUT_CHANNELS}")
    if c.vad_silence_ms < 0 or c.turn_complete_silence_ms < 0 or c.turn_incomplete_silence_ms < 0:
        raise InvalidInput("vad_silence_ms and turn_*_silence_ms must be >= 0")
    if c.turn_detector not in _DETECTORS:
        raise InvalidInput(f"unknown turn_detector {c.turn_detector} (not a TurnDetector value)")
    sampling = None
    if c.HasField("sampling"):
        s = c.sampling
        sampling = Sampling(
            temperature=s.temperature if s.HasField("temperature") else None,
            top_p=s.top_p if s.HasField("top_p") else None,
            max_tokens=s.max_tokens, stop=tuple(s.stop),
            seed=s.seed if s.HasField("seed") else None,
        )
    return SessionSettings(
        input_format=InputFormat(input_encoding, fmt.sample_rate_hz, fmt.channels),
        language=c.language, voice=c.voice,
        output_encoding=_OUTPUT_ENCODINGS[out.encoding], output_sample_rate_hz=out.sample_rate_hz,
        system_prompt=c.system_prompt, llm_providers=tuple(c.llm_providers), sampling=sampling,
        no_cache=c.no_cache, server_vad=c.server_vad, vad_silence_ms=c.vad_silence_ms,
        turn_detector=_DETECTORS[c.turn_detector], turn_complete_silence_ms=c.turn_complete_silence_ms,
        turn_incomplete_silence_ms=c.turn_incomplete_silence_ms,
        speculative_reply=c.speculative_reply if c.HasField("speculative_reply") else True,
    )


def _response(event: Event) -> voice_pb2.ConverseResponse:
    if isinstance(event, TranscriptEvent):
        return voice_pb2.ConverseResponse(
            turn=event.turn, transcript=voice_pb2.Transcript(text=event.text, language=event.language))
    if isinstance(event, InterimTranscriptEvent):
        return voice_pb2.ConverseResponse(turn=event.turn, interim_transcript=voice_pb2.Transcript(
            text=event.text, language=event.language))
    if isinstance(event, TextDeltaEvent):
        return voice_pb2.ConverseResponse(
            turn=event.turn, assistant_text=voice_pb2.AssistantText(delta=event.delta))
    if isinstance(event, AudioFormatEvent):
        return voice_pb2.ConverseResponse(turn=event.turn, audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AudioEncoding.Value(event.encoding),
            sample_rate_hz=event.sample_rate_hz, channels=event.channels))
    if isinstance(event, AudioEvent):
        return voice_pb2.ConverseResponse(turn=event.turn, audio=event.data)
    if isinstance(event, ClientToolCallEvent):
        return voice_pb2.ConverseResponse(turn=event.turn, tool_call=voice_pb2.ClientToolCall(
            id=event.id, name=event.name, arguments_json=event.arguments_json))
    if isinstance(event, ToolCallCancelledEvent):
        return voice_pb2.ConverseResponse(turn=event.turn, tool_call_cancelled=voice_pb2.ToolCallCancelled(
            id=event.id, reason=event.reason))
    assert isinstance(event, MetricsEvent)
    m = event.metrics
    return voice_pb2.ConverseResponse(turn=event.turn, metrics=voice_pb2.TurnMetrics(
        stt_ms=m.stt_ms, llm_ttft_ms=m.llm_ttft_ms, llm_total_ms=m.llm_total_ms,
        tts_first_audio_ms=m.tts_first_audio_ms, time_to_first_audio_ms=m.time_to_first_audio_ms,
        total_ms=m.total_ms, trace_id=m.trace_id, llm_provider=m.llm_provider,
        cache_hit=m.cache_hit, status=_STATUS[m.status], sentences=m.sentences,
        reply_audio_seconds=m.reply_audio_seconds, tts_total_ms=m.tts_total_ms, error=m.error,
        end_of_speech_to_first_audio_ms=m.end_of_speech_to_first_audio_ms,
        endpointing_ms=m.endpointing_ms, speculative_starts=m.speculative_starts,
        speculative_hits=m.speculative_hits, speculative_misses=m.speculative_misses,
        speculative_tokens_wasted=m.speculative_tokens_wasted,
        tool_calls=m.tool_calls, tool_ms=m.tool_ms,
    ))
