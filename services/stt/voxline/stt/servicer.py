"""gRPC edge of the STT service: protobuf in, engine call, protobuf out. No inference here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from voxline.common.errors import InvalidInput, NotConfigured
from voxline.common.grpc_errors import translate_errors
from voxline.stt.config import LiveLimits
from voxline.stt.detectors import TurnDetectors, TurnOptions
from voxline.stt.endpoint import EndReason, SpeechPaused, SpeechStarted
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcriber, Transcript
from voxline.stt.listen import EndTurn, Interim, ListenEvent, ListenRequest, ReplyStarted, listen_stream
from voxline.stt.stream import StreamFormat, transcribe_stream
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

SERVICE_NAME = "voxline.v1.SpeechToText"

#: AudioEncoding → the encoding names of voxline.common.audio (None: sniff the container).
_ENCODINGS: dict[int, str | None] = {
    audio_pb2.AUDIO_ENCODING_UNSPECIFIED: None,
    audio_pb2.PCM_S16LE: "pcm_s16le",
    audio_pb2.WAV: "wav",
    audio_pb2.FLAC: "flac",
    audio_pb2.OGG_OPUS: "ogg_opus",
    audio_pb2.MP3: "mp3",
    audio_pb2.AIFF: "aiff",
}


def stream_format(fmt: audio_pb2.AudioFormat) -> StreamFormat:
    """The engine's view of an AudioFormat; InvalidInput for an encoding this server does not know."""
    if fmt.encoding not in _ENCODINGS:
        raise InvalidInput(f"unsupported audio encoding {fmt.encoding} (not a known AudioEncoding value)")
    if fmt.sample_rate_hz < 0 or fmt.channels < 0:
        raise InvalidInput("sample_rate_hz and channels must not be negative")
    return StreamFormat(_ENCODINGS[fmt.encoding], fmt.sample_rate_hz, fmt.channels)


def recognition_options(config: stt_pb2.RecognitionConfig) -> RecognitionOptions:
    """Per-request overrides from a RecognitionConfig."""
    if config.beam_size < 0:
        raise InvalidInput(f"beam_size must be >= 0, got {config.beam_size}")
    return RecognitionOptions(
        language=config.language,
        beam_size=config.beam_size,
        vad_filter=config.vad_filter if config.HasField("vad_filter") else None,
    )


def to_response(result: Transcript) -> stt_pb2.TranscribeResponse:
    """Encode a Transcript."""
    return stt_pb2.TranscribeResponse(
        text=result.text,
        language=result.language,
        language_probability=result.language_probability,
        segments=[stt_pb2.Segment(start_s=s.start_s, end_s=s.end_s, text=s.text) for s in result.segments],
        audio_seconds=result.audio_seconds,
        processing_ms=result.processing_ms,
        decode_ms=result.decode_ms,
    )


_DETECTORS = {
    stt_pb2.TURN_DETECTOR_UNSPECIFIED: "",
    stt_pb2.SMART_TURN: "smart_turn",
    stt_pb2.SILERO_VAD: "silero_vad",
    stt_pb2.ENERGY_VAD: "energy_vad",
}
_REASONS = {
    EndReason.COMPLETE: stt_pb2.COMPLETE,
    EndReason.SILENCE: stt_pb2.SILENCE,
    EndReason.CLIENT: stt_pb2.CLIENT,
    EndReason.STREAM_END: stt_pb2.STREAM_END,
}


def turn_options(config: stt_pb2.TurnConfig) -> TurnOptions:
    """A stream's turn-detection choices from a TurnConfig."""
    if config.detector not in _DETECTORS:
        raise InvalidInput(f"unknown turn detector {config.detector} (not a TurnDetector value)")
    return TurnOptions(_DETECTORS[config.detector], config.complete_silence_ms,
                       config.incomplete_silence_ms, config.silence_ms)


def listen_response(event: ListenEvent) -> stt_pb2.ListenResponse:
    """Encode one Listen event."""
    if isinstance(event, SpeechStarted):
        return stt_pb2.ListenResponse(speech_started=stt_pb2.SpeechStarted(
            turn=event.turn, at_s=event.at_s, continues_turn=event.continues_turn))
    if isinstance(event, SpeechPaused):
        return stt_pb2.ListenResponse(speech_paused=stt_pb2.SpeechPaused(
            turn=event.turn, end_of_speech_s=event.end_of_speech_s,
            complete_probability=event.probability, silence_limit_ms=event.silence_limit_ms,
            text_complete_probability=event.text_probability))
    if isinstance(event, Interim):
        return stt_pb2.ListenResponse(interim=stt_pb2.InterimTranscript(
            turn=event.turn, result=to_response(event.transcript), audio_end_s=event.audio_end_s,
            at_pause=event.at_pause))
    ended = event.ended
    return stt_pb2.ListenResponse(end_of_turn=stt_pb2.EndOfTurn(
        turn=ended.turn, end_of_speech_s=ended.end_of_speech_s, ended_at_s=ended.ended_at_s,
        reason=_REASONS[ended.reason], complete_probability=ended.probability,
        transcript=to_response(event.transcript)))


_Request = TypeVar("_Request", stt_pb2.StreamingTranscribeRequest, stt_pb2.ListenRequest)


async def _first_message(requests: AsyncIterator[_Request], not_config: str) -> _Request:
    """A stream's first message, which must be its config; InvalidInput (``not_config`` when the
    stream starts with something else) otherwise."""
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidInput("first message must be config; the stream ended without one") from None
    if first.WhichOneof("request") != "config":
        raise InvalidInput(not_config)
    return first


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    """voxline.v1.SpeechToText over a Transcriber."""

    def __init__(self, engine: Transcriber, *, partial_interval_s: float, max_stream_bytes: int,
                 turns: TurnDetectors | None = None, listen_interim_interval_s: float = 0.0,
                 live: LiveLimits | None = None) -> None:
        self._engine = engine
        self._live = live or LiveLimits()
        self._partial_interval_s = partial_interval_s
        self._max_stream_bytes = max_stream_bytes
        self._turns = turns
        self._listen_interim_interval_s = listen_interim_interval_s

    @translate_errors
    async def Transcribe(self, request: stt_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
                         ) -> stt_pb2.TranscribeResponse:
        fmt = stream_format(request.config.format)
        fmt.validate()
        options = recognition_options(request.config)
        audio = AudioInput(request.audio, fmt.encoding, fmt.sample_rate, fmt.channels)
        return to_response(await self._engine.transcribe(audio, options))

    @translate_errors
    async def StreamingTranscribe(
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        requests = aiter(request_iterator)
        config = (await _first_message(
            requests, "first message must be config (a RecognitionConfig), not audio")).config
        fmt = stream_format(config.format)
        options = recognition_options(config)
        interval = config.partial_interval_s or self._partial_interval_s

        async def chunks() -> AsyncIterator[bytes]:
            async for message in requests:
                kind = message.WhichOneof("request")
                if kind == "config":
                    raise InvalidInput("config sent twice: only the first message may be config")
                if kind == "audio":
                    yield message.audio
                # a message with neither field set carries nothing; skip it

        async for is_final, result in transcribe_stream(
            self._engine, fmt, options, chunks(),
            partial_interval_s=interval, max_stream_bytes=self._max_stream_bytes,
        ):
            yield stt_pb2.StreamingTranscribeResponse(is_final=is_final, result=to_response(result))

    @translate_errors
    async def Listen(
        self,
        request_iterator: AsyncIterator[stt_pb2.ListenRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.ListenResponse]:
        if self._turns is None:
            raise NotConfigured("this server was started without turn detection")
        requests = aiter(request_iterator)
        first = await _first_message(requests, "first message must be config (a ListenConfig)")
        recognition = first.config.recognition
        fmt = stream_format(recognition.format)
        options = recognition_options(recognition)
        endpointer = self._turns.endpointer(turn_options(first.config.turn))
        interval = recognition.partial_interval_s or self._listen_interim_interval_s

        async def messages() -> AsyncIterator[ListenRequest]:
            async for message in requests:
                kind = message.WhichOneof("request")
                if kind == "config":
                    raise InvalidInput("config sent twice: only the first message may be config")
                if kind == "audio":
                    yield message.audio
                elif kind == "end_turn":
                    yield EndTurn()
                elif kind == "reply_started":
                    yield ReplyStarted()

        async for event in listen_stream(self._engine, endpointer, fmt, options, messages(),
                                         interim_interval_s=interval,
                                         max_turn_seconds=self._engine.max_audio_seconds,
                                         cost=self._turns.cost, read_words=self._turns.words,
                                         limits=self._live):
            yield listen_response(event)
