"""The sequential path over the same services, as the baseline ran it: STT, then the whole LLM reply,
then TTS of the whole reply, nothing audible before the end.

``voxline demo`` prints it beside its own figures and the benchmark's section 1 (bench/suite/
baseline.py) uses it, so both compare streaming with the same client on the same machine and engines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import grpc

from voxline.v1 import (
    audio_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)


def sampling(max_tokens: int, temperature: float = 0.0) -> llm_pb2.SamplingOptions:
    """Sampling options for a reproducible comparison (greedy, at most ``max_tokens``)."""
    return llm_pb2.SamplingOptions(temperature=temperature, max_tokens=max_tokens)


class SequentialClient:
    """The baseline's path over the stt, llm and tts services: each stage waits for the whole output
    of the one before. ``sampling`` None leaves the LLM service's defaults (as a session that sets
    none gets); ``no_cache`` skips the LLM service's reply cache."""

    def __init__(self, stt: str, llm: str, tts: str, system_prompt: str,
                 sampling: llm_pb2.SamplingOptions | None = None, *, language: str = "en",
                 voice: str = "", no_cache: bool = True) -> None:
        self.channels = {name: grpc.aio.insecure_channel(addr) for name, addr in
                         (("stt", stt), ("llm", llm), ("tts", tts))}
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.language = language
        self.voice = voice
        self.no_cache = no_cache

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def turn(self, clip: bytes, history: Sequence[tuple[str, str]] = ()
                   ) -> tuple[dict[str, float], str]:
        """One turn of ``clip`` (an audio file's bytes) after ``history`` (earlier (user, assistant)
        exchanges, as a conversation's LLM request carries them): its figures (ms, the TurnMetrics
        names) and the reply text. First audio = total: nothing plays before the whole reply is
        synthesised."""
        clock = time.perf_counter
        t0 = clock()
        heard = await stt_pb2_grpc.SpeechToTextStub(self.channels["stt"]).Transcribe(
            stt_pb2.TranscribeRequest(config=stt_pb2.RecognitionConfig(language=self.language),
                                      audio=clip),
            timeout=120)
        t1 = clock()
        request = llm_pb2.GenerateRequest(
            messages=[llm_pb2.ChatMessage(role="system", content=self.system_prompt),
                      *(llm_pb2.ChatMessage(role=role, content=text) for user, assistant in history
                        for role, text in (("user", user), ("assistant", assistant))),
                      llm_pb2.ChatMessage(role="user", content=heard.text)],
            no_cache=self.no_cache)
        if self.sampling is not None:
            request.sampling.CopyFrom(self.sampling)
        reply, ttft = "", math.nan
        llm = llm_pb2_grpc.LanguageModelStub(self.channels["llm"])
        async for event in llm.Generate(request, timeout=300):
            if event.WhichOneof("event") == "text_delta":
                if not reply:
                    ttft = (clock() - t1) * 1000.0
                reply += event.text_delta
        t2 = clock()
        first_audio = math.nan
        audio_bytes = 0
        synth = tts_pb2.SynthesizeRequest(text=reply, voice=self.voice, output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.PCM_S16LE))
        async for event in tts_pb2_grpc.TextToSpeechStub(self.channels["tts"]).Synthesize(synth, timeout=300):
            if event.WhichOneof("event") == "audio":
                if not audio_bytes:
                    first_audio = (clock() - t2) * 1000.0
                audio_bytes += len(event.audio.data)
        t3 = clock()
        total = (t3 - t0) * 1000.0
        return {"stt_ms": (t1 - t0) * 1000.0, "llm_ttft_ms": ttft, "llm_total_ms": (t2 - t1) * 1000.0,
                "tts_first_audio_ms": first_audio, "tts_total_ms": (t3 - t2) * 1000.0,
                "time_to_first_audio_ms": total, "total_ms": total}, reply
