"""Orchestrator overhead and the pipelining gain, measured with fake engines of known cost.

    .venv/bin/python -m bench.orchestrator_overhead [--turns 200] [--runs 5] [--sentences 4]

Everything runs in one process on 127.0.0.1: fake STT/LLM/TTS gRPC servers
(``voxline.testing.fake_servers``, the same fakes the orchestrator tests use: real sockets, scripted
latencies), the real orchestrator server, and a Converse client.

1. Overhead per turn: one-sentence spoken turns on one stream. The reply is one sentence, so the
   stages run strictly one after another and the engines' own time is the sum of the fakes' handler
   times (measured inside each fake). Overhead = turn total (orchestrator's TurnMetrics.total_ms)
   − engines' time: gRPC hops, protobuf, sentence cutting, event queueing, tracing.
2. Pipelining: a multi-sentence reply, time to first audio vs total, through the orchestrator
   (sentence N is synthesised while the LLM writes N+1) and sequentially as the baseline did
   (STT, then the whole LLM reply, then TTS of the whole text), both against the same fakes and timed
   by the client from the end of the utterance.

``measure()`` is the reusable core (``voxline bench`` can call it); ``format_report()`` prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import statistics
import sys
import time

import grpc

from bench.stats import percentile
from voxline.common.config import ServerConfig
from voxline.common.server import start_server
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.wiring import build_spec
from voxline.testing.fake_servers import FakeStack, tone_pcm
from voxline.v1 import (
    audio_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
    voice_pb2,
    voice_pb2_grpc,
)

PCM16K = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=1)


@dataclasses.dataclass(frozen=True)
class Costs:
    """What the fake engines cost, seconds."""

    stt_s: float = 0.025  # the baseline's in-memory STT
    llm_ttft_s: float = 0.150
    llm_per_sentence_s: float = 0.120  # time the LLM takes to write each further sentence
    tts_first_audio_s: float = 0.030
    tts_per_char_s: float = 0.0015  # ~70 ms for a 30-character sentence before its audio


@dataclasses.dataclass(frozen=True)
class Figures:
    """Results, milliseconds."""

    turns: int
    overhead_p50_ms: float
    overhead_p99_ms: float
    overhead_mean_ms: float
    engines_p50_ms: float
    total_p50_ms: float
    sentences: int
    runs: int
    pipelined_ttfa_ms: float
    pipelined_total_ms: float
    sequential_ttfa_ms: float
    sequential_total_ms: float

    @property
    def ttfa_gain(self) -> float:
        """How many times sooner the first audio comes when pipelined."""
        return self.sequential_ttfa_ms / self.pipelined_ttfa_ms

    @property
    def total_gain(self) -> float:
        return self.sequential_total_ms / self.pipelined_total_ms


def _sentences(n: int) -> list[str]:
    return [f"This is sentence number {i + 1} of the reply. " for i in range(n)]


async def _converse_turn(call: grpc.aio.StreamStreamCall, audio: bytes
                         ) -> tuple[float, float, voice_pb2.TurnMetrics]:
    """Send one utterance; return (client ttfa s, client total s, metrics)."""
    for i in range(0, len(audio), 6400):
        await call.write(voice_pb2.ConverseRequest(audio=audio[i:i + 6400]))
    await call.write(voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))
    start = time.perf_counter()
    first = last = None
    while True:
        event = await call.read()
        kind = event.WhichOneof("event")
        if kind == "audio":
            last = time.perf_counter()
            first = first or last
        elif kind == "metrics":
            if event.metrics.status != voice_pb2.COMPLETED:
                raise RuntimeError(f"turn failed: {event.metrics.error}")
            assert first is not None and last is not None
            return first - start, last - start, event.metrics


async def _sequential_turn(fakes: FakeStack, audio: bytes) -> tuple[float, float]:
    """The baseline's order over the same gRPC services: STT, whole LLM reply, TTS of all of it."""
    async with grpc.aio.insecure_channel(fakes.stt.address) as stt_ch, \
            grpc.aio.insecure_channel(fakes.llm.address) as llm_ch, \
            grpc.aio.insecure_channel(fakes.tts.address) as tts_ch:
        start = time.perf_counter()
        transcript = await stt_pb2_grpc.SpeechToTextStub(stt_ch).Transcribe(stt_pb2.TranscribeRequest(
            config=stt_pb2.RecognitionConfig(format=PCM16K), audio=audio))
        reply = ""
        async for event in llm_pb2_grpc.LanguageModelStub(llm_ch).Generate(llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content=transcript.text)])):
            reply += event.text_delta
        first = last = None
        async for event in tts_pb2_grpc.TextToSpeechStub(tts_ch).Synthesize(
                tts_pb2.SynthesizeRequest(text=reply.strip(), output_format=PCM16K)):
            if event.HasField("audio"):
                last = time.perf_counter()
                first = first or last
        assert first is not None and last is not None
        return first - start, last - start


def _script(fakes: FakeStack, costs: Costs, sentences: int) -> None:
    fakes.stt.latency_s = costs.stt_s
    fakes.llm.first_delay_s = costs.llm_ttft_s
    fakes.llm.delta_delay_s = costs.llm_per_sentence_s
    fakes.llm.deltas = _sentences(sentences)
    fakes.tts.first_audio_s = costs.tts_first_audio_s
    fakes.tts.cost_per_char_s = costs.tts_per_char_s


async def measure(turns: int = 200, runs: int = 5, sentences: int = 4, costs: Costs = Costs()) -> Figures:
    """Run both measurements; return the figures."""
    fakes = await FakeStack().start()
    config = OrchestratorConfig(stt_address=fakes.stt.address, llm_address=fakes.llm.address,
                                tts_address=fakes.tts.address)
    orchestrator = await start_server(build_spec(config), ServerConfig(port=0))
    await orchestrator.warm_up()
    audio = tone_pcm(1.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()
            await call.write(voice_pb2.ConverseRequest(config=voice_pb2.SessionConfig(
                input_format=PCM16K, output_format=PCM16K)))
            # 1. overhead: one-sentence replies, cheap engines (the overhead is what is left)
            fakes.stt.latency_s, fakes.llm.first_delay_s = 0.002, 0.002
            fakes.llm.deltas, fakes.llm.delta_delay_s = ["Fine, ", "thank you."], 0.0
            fakes.tts.first_audio_s = 0.002
            for _ in range(5):  # warm-up: connections, code paths
                await _converse_turn(call, audio)
            for log in (fakes.stt.log, fakes.llm.log, fakes.tts.log):
                log.busy_s.clear()
            totals = []
            for _ in range(turns):
                _, _, metrics = await _converse_turn(call, audio)
                totals.append(metrics.total_ms)
            engines = [1000 * (s + llm + t) for s, llm, t in
                       zip(fakes.stt.log.busy_s, fakes.llm.log.busy_s, fakes.tts.log.busy_s, strict=True)]
            overhead = [total - engine for total, engine in zip(totals, engines, strict=True)]

            # 2. pipelining: a multi-sentence reply with realistic costs, both ways
            _script(fakes, costs, sentences)
            piped, sequential = [], []
            for _ in range(runs):
                piped.append(await _converse_turn(call, audio))
                sequential.append(await _sequential_turn(fakes, audio))
            await call.done_writing()
            await call.code()
    finally:
        await orchestrator.stop(0)
        await fakes.stop()
    med = statistics.median
    return Figures(
        turns=turns,
        overhead_p50_ms=percentile(overhead, 50), overhead_p99_ms=percentile(overhead, 99),
        overhead_mean_ms=statistics.fmean(overhead), engines_p50_ms=percentile(engines, 50),
        total_p50_ms=percentile(totals, 50), sentences=sentences, runs=runs,
        pipelined_ttfa_ms=1000 * med(p[0] for p in piped),
        pipelined_total_ms=1000 * med(p[1] for p in piped),
        sequential_ttfa_ms=1000 * med(s[0] for s in sequential),
        sequential_total_ms=1000 * med(s[1] for s in sequential),
    )


def format_report(f: Figures, costs: Costs = Costs()) -> str:
    """The figures as a small text report."""
    lines = [
        f"orchestrator overhead per turn ({f.turns} one-sentence spoken turns, one stream, fake engines)",
        f"  turn total p50 {f.total_p50_ms:8.2f} ms   engines p50 {f.engines_p50_ms:8.2f} ms",
        f"  overhead   p50 {f.overhead_p50_ms:8.2f} ms   p99 {f.overhead_p99_ms:8.2f} ms"
        f"   mean {f.overhead_mean_ms:8.2f} ms",
        "",
        f"{f.sentences}-sentence reply, median of {f.runs} runs (fake costs: STT {costs.stt_s * 1e3:.0f} ms,"
        f" LLM TTFT {costs.llm_ttft_s * 1e3:.0f} ms + {costs.llm_per_sentence_s * 1e3:.0f} ms"
        f"/sentence, TTS {costs.tts_first_audio_s * 1e3:.0f} ms + {costs.tts_per_char_s * 1e3:.1f} ms/char)",
        f"  {'':28}{'time to first audio':>22}{'total':>12}",
        f"  {'pipelined (orchestrator)':28}{f.pipelined_ttfa_ms:19.1f} ms{f.pipelined_total_ms:9.1f} ms",
        f"  {'sequential (baseline order)':28}{f.sequential_ttfa_ms:19.1f} ms{f.sequential_total_ms:9.1f} ms",
        f"  {'gain (sequential/pipelined)':28}{f.ttfa_gain:20.2f}x{f.total_gain:11.2f}x",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="turns for the overhead figures")
    parser.add_argument("--runs", type=int, default=5, help="runs of the multi-sentence turn, each way")
    parser.add_argument("--sentences", type=int, default=4, help="sentences in the multi-sentence reply")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(measure(ns.turns, ns.runs, ns.sentences))
    print(format_report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
