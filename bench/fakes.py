"""Fake STT, LLM and TTS services with fixed costs, run as real processes for the scaling benchmark.

``python -m bench.fakes stt|llm|tts --port 0 [--host H] [cost flags]`` serves the real wire contract
on the shared bootstrap (health, reflection, ``listening ... port=N`` log line), so
``voxline.cli.stack.Stack`` starts them exactly like the real services and the orchestrator cannot
tell the difference. Costs are ``asyncio.sleep``: a fake engine waits like a remote GPU or API would
but burns no CPU, so any saturation seen with them is the pipeline's own (orchestrator, gRPC).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from voxline.common.config import ServerConfig, add_server_options, server_config_from_args
from voxline.common.logs import setup_logging
from voxline.common.sentences import split_sentences
from voxline.common.server import ServiceSpec, run
from voxline.v1 import audio_pb2, llm_pb2, llm_pb2_grpc, stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc

#: What the fake LLM says: three sentences, so TTS of the first overlaps generation of the rest.
REPLY = "Paris is the capital of France. It lies on the Seine. Around two million people live there."
TRANSCRIPT = "What is the capital of France?"
TTS_RATE = 16000
#: Reply audio per character of text (about 14 characters per second of speech).
SECONDS_PER_CHAR = 0.07
CHUNK_SAMPLES = 4096


class FakeStt(stt_pb2_grpc.SpeechToTextServicer):
    """Answers every clip with a fixed transcript after ``cost_s``."""

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s

    def _result(self, audio_bytes: int) -> stt_pb2.TranscribeResponse:
        return stt_pb2.TranscribeResponse(text=TRANSCRIPT, language="en", language_probability=1.0,
                                          audio_seconds=audio_bytes / 32000.0,
                                          processing_ms=self.cost_s * 1000.0)

    async def Transcribe(self, request: stt_pb2.TranscribeRequest, context: Any
                         ) -> stt_pb2.TranscribeResponse:
        await asyncio.sleep(self.cost_s)
        return self._result(len(request.audio))

    async def StreamingTranscribe(self, request_iterator: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
                                  context: Any) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        received = 0
        async for request in request_iterator:
            received += len(request.audio)
        await asyncio.sleep(self.cost_s)
        yield stt_pb2.StreamingTranscribeResponse(is_final=True, result=self._result(received))


class FakeLlm(llm_pb2_grpc.LanguageModelServicer):
    """Streams REPLY word by word: ``ttft_s`` before the first word, ``token_s`` before each next one."""

    def __init__(self, ttft_s: float, token_s: float) -> None:
        self.ttft_s = ttft_s
        self.token_s = token_s

    async def Generate(self, request: llm_pb2.GenerateRequest, context: Any
                       ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        words = REPLY.split(" ")
        await asyncio.sleep(self.ttft_s)
        ttft_ms = (loop.time() - started) * 1000.0
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(self.token_s)
            yield llm_pb2.GenerateResponse(text_delta=word if index == 0 else " " + word)
        yield llm_pb2.GenerateResponse(summary=llm_pb2.GenerateSummary(
            provider="fake", model="fixed-cost", time_to_first_token_ms=ttft_ms,
            total_ms=(loop.time() - started) * 1000.0, finish_reason="stop",
            usage=llm_pb2.TokenUsage(prompt_tokens=20, completion_tokens=len(words))))

    async def ListProviders(self, request: llm_pb2.ListProvidersRequest, context: Any
                            ) -> llm_pb2.ListProvidersResponse:
        return llm_pb2.ListProvidersResponse(providers=[llm_pb2.ProviderStatus(
            name="fake", model="fixed-cost", available=True, circuit="closed")])


class FakeTts(tts_pb2_grpc.TextToSpeechServicer):
    """Per sentence: ``cost_s`` wait, then silent PCM16 as long as the sentence would take to say."""

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: Any
                         ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        if not request.text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
        rate = request.output_format.sample_rate_hz or TTS_RATE
        yield tts_pb2.SynthesizeResponse(format=audio_pb2.AudioFormat(
            encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=1))
        for index, sentence in enumerate(list(split_sentences(request.text)) or [request.text]):
            await asyncio.sleep(self.cost_s)
            samples = int(len(sentence) * SECONDS_PER_CHAR * rate)
            for start in range(0, samples, CHUNK_SAMPLES):
                size = min(CHUNK_SAMPLES, samples - start)
                yield tts_pb2.SynthesizeResponse(audio=tts_pb2.AudioChunk(
                    data=bytes(2 * size), sentence_index=index,
                    sentence=sentence if start == 0 else ""))

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: Any
                         ) -> tts_pb2.ListVoicesResponse:
        return tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(
            name="fake:silence", engine="fake", language="en", sample_rate_hz=TTS_RATE)])


def build_spec(stage: str, ns: argparse.Namespace) -> ServiceSpec:
    """The ServiceSpec of one fake stage."""
    async def warm_up() -> None:
        return None

    servicer: Any
    if stage == "stt":
        servicer = FakeStt(ns.stt_ms / 1000.0)
        return ServiceSpec(name="fake-stt", grpc_services=["voxline.v1.SpeechToText"], warm_up=warm_up,
                           register=lambda s: stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, s))
    if stage == "llm":
        servicer = FakeLlm(ns.llm_ttft_ms / 1000.0, ns.llm_token_ms / 1000.0)
        return ServiceSpec(name="fake-llm", grpc_services=["voxline.v1.LanguageModel"], warm_up=warm_up,
                           register=lambda s: llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, s))
    servicer = FakeTts(ns.tts_ms / 1000.0)
    return ServiceSpec(name="fake-tts", grpc_services=["voxline.v1.TextToSpeech"], warm_up=warm_up,
                       register=lambda s: tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, s))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fakes",
                                     description="A fake voxline stage with fixed costs.")
    parser.add_argument("stage", choices=["stt", "llm", "tts"])
    add_server_options(parser, "stt")  # the stage only picks env var names; --port is always given
    parser.add_argument("--stt-ms", type=float, default=25.0, help="STT cost per clip [default: 25]")
    parser.add_argument("--llm-ttft-ms", type=float, default=100.0, help="LLM time to first token [100]")
    parser.add_argument("--llm-token-ms", type=float, default=10.0, help="LLM time per next word [10]")
    parser.add_argument("--tts-ms", type=float, default=30.0, help="TTS cost per sentence [30]")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    config: ServerConfig = server_config_from_args(ns)
    setup_logging(config.log_level, config.log_format)
    return run(lambda: build_spec(ns.stage, ns), config)


if __name__ == "__main__":
    sys.exit(main())
