"""Wire the TTS service together: synthesizer, servicer, voice loading at warm-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from voxline.common.server import ServiceSpec
from voxline.tts.config import TtsConfig
from voxline.tts.engine import SpeechSynthesizer, SynthesisOutcome
from voxline.tts.loader import load_voices
from voxline.tts.servicer import SERVICE_NAME, TextToSpeechServicer
from voxline.tts.voices import VoiceBook
from voxline.v1 import tts_pb2_grpc


def build_spec(
    config: TtsConfig,
    *,
    load: Callable[[TtsConfig], VoiceBook] = load_voices,
    on_finished: Callable[[SynthesisOutcome], None] | None = None,
) -> ServiceSpec:
    """The ServiceSpec to serve. ``load`` builds the voices at warm-up (in a worker thread); tests
    pass a loader of fake voices and ``on_finished`` to observe outcomes."""
    synthesizer = SpeechSynthesizer(
        max_text_chars=config.max_text_chars,
        chunk_bytes=config.chunk_bytes,
        max_active=config.max_active,
        max_queued=config.max_queued,
        max_sentence_chars=config.max_sentence_chars,
        max_audio_seconds=config.max_audio_seconds,
        on_finished=on_finished,
    )
    servicer = TextToSpeechServicer(synthesizer)

    def register(server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, server)

    async def warm_up() -> None:
        synthesizer.set_voices(await asyncio.to_thread(load, config))

    return ServiceSpec(name="voxline-tts", grpc_services=[SERVICE_NAME], register=register,
                       warm_up=warm_up)
