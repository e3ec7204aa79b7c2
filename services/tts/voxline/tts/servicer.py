"""gRPC edge of the TTS service: decode requests, call the synthesizer, encode replies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from voxline.common.grpc_errors import translate_errors
from voxline.tts.engine import SpeechSynthesizer
from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

#: Full gRPC name, for health and reflection.
SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name

# UNSPECIFIED output means raw PCM: the cheapest format to stream and play.
_ENCODING_NAMES: dict[int, str] = {
    audio_pb2.AUDIO_ENCODING_UNSPECIFIED: "pcm_s16le",
    audio_pb2.PCM_S16LE: "pcm_s16le",
    audio_pb2.WAV: "wav",
}
_ENCODING_VALUES: dict[str, audio_pb2.AudioEncoding.ValueType] = {
    "pcm_s16le": audio_pb2.PCM_S16LE,
    "wav": audio_pb2.WAV,
}


def _encoding_name(value: int) -> str:
    """Wire enum → the engine's encoding name; unsupported ones keep their name for the error."""
    if value in _ENCODING_NAMES:
        return _ENCODING_NAMES[value]
    try:
        return audio_pb2.AudioEncoding.Name(audio_pb2.AudioEncoding.ValueType(value)).lower()
    except ValueError:
        return f"encoding #{value}"


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    """voxline.v1.TextToSpeech over a SpeechSynthesizer."""

    def __init__(self, synthesizer: SpeechSynthesizer) -> None:
        self._synthesizer = synthesizer

    @translate_errors
    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        """The output format first, then each sentence's audio as soon as it is synthesised."""
        out = request.output_format
        plan = self._synthesizer.plan(request.text, request.voice, _encoding_name(out.encoding),
                                      out.sample_rate_hz, out.channels)
        async with self._synthesizer.admit():
            yield tts_pb2.SynthesizeResponse(format=audio_pb2.AudioFormat(
                encoding=_ENCODING_VALUES[plan.output.encoding],
                sample_rate_hz=plan.output.sample_rate,
                channels=plan.output.channels,
            ))
            # aclosing: when the call is cancelled the stream is closed at once, so no further
            # sentence is started.
            async with contextlib.aclosing(self._synthesizer.stream(plan)) as pieces:
                async for piece in pieces:
                    yield tts_pb2.SynthesizeResponse(audio=tts_pb2.AudioChunk(
                        data=piece.data, sentence_index=piece.sentence_index, sentence=piece.sentence,
                    ))

    @translate_errors
    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        """The loaded voices, the default first."""
        return tts_pb2.ListVoicesResponse(voices=[
            tts_pb2.Voice(name=v.name, engine=v.engine, language=v.language,
                          sample_rate_hz=v.sample_rate)
            for v in self._synthesizer.voices
        ])
