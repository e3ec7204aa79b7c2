"""Start the services on 127.0.0.1:0, run fuzz, resource, fault and load cases, fill the matrix.

Services: the real STT and TTS as processes (their RSS is measured), the real LLM gateway in this
process over scripted providers (fast, deterministic: the gateway's own validation and routing are
what is fuzzed), the real orchestrator as a process over the bench's fake stages
(``voxline.testing.fake_stage``), and — in the full run — a real LLM gateway process on the local
model for the LLM bomb classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.reliability import bombs, faults, live_orchestrator, live_stt, load, procs
from bench.reliability.converse import COMPLETED, Session, pcm_config
from bench.reliability.fuzz import Rpc, _wav, fuzz_rpc
from bench.reliability.matrix import Matrix, Row
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.testing.fake_servers import tone_pcm
from voxline.v1 import (
    audio_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
    voice_pb2,
)


@dataclass(frozen=True)
class Sizes:
    """How much of everything one run does."""

    fuzz_per_rpc: int
    sessions: int
    turns: int
    slow_readers: int
    slow_turns: int
    slow_window_s: float
    #: The documented bound on orchestrator growth with slow readers, MB.
    slow_bound_mb: float
    abandoned: int
    kills_per_stage: int
    provider_repeats: int
    bomb_repeats: int
    flac_minutes: float
    vad_mib: int
    #: Start a real LLM gateway on the local model for the LLM bombs (tens of seconds).
    local_llm: bool
    #: TTS voices: Piper too (its bomb class), or espeak only (fast start).
    piper: bool
    #: Start the real STT (Whisper: seconds to load) for its fuzz and bomb rows.
    real_stt: bool
    #: The SIGTERM-drain orchestrator's grace period.
    drain_grace_s: float
    #: False: only what runs in this process (LLM gateway fuzz and provider faults), seconds.
    processes: bool = True


SMOKE = Sizes(fuzz_per_rpc=10, sessions=2, turns=2, slow_readers=1, slow_turns=2, slow_window_s=0.5,
              slow_bound_mb=100.0, abandoned=2, kills_per_stage=1, provider_repeats=1, bomb_repeats=1,
              flac_minutes=3.0, vad_mib=4, local_llm=False, piper=False, real_stt=False,
              drain_grace_s=3.0)
#: ``python -m bench --smoke``: in-process parts only, so the whole bench smoke stays short.
TINY = dataclasses.replace(SMOKE, fuzz_per_rpc=6, processes=False)
FULL = Sizes(fuzz_per_rpc=290, sessions=16, turns=100, slow_readers=8, slow_turns=20,
             slow_window_s=5.0, slow_bound_mb=100.0, abandoned=20, kills_per_stage=2,
             provider_repeats=4, bomb_repeats=3, flac_minutes=60.0, vad_mib=120, local_llm=True,
             piper=True, real_stt=True, drain_grace_s=8.0)

PCM16K = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=1)


def rpcs() -> dict[str, list[Rpc]]:
    """Every RPC of the contract, with valid templates."""
    pcm = tone_pcm(0.5)
    wav = _wav(pcm)
    recognition = stt_pb2.RecognitionConfig(format=PCM16K, language="en")
    return {
        "stt": [
            Rpc("voxline.v1.SpeechToText", "Transcribe", stt_pb2.TranscribeRequest.DESCRIPTOR, False, False,
                [stt_pb2.TranscribeRequest(config=stt_pb2.RecognitionConfig(
                    format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV)), audio=wav)]),
            Rpc("voxline.v1.SpeechToText", "StreamingTranscribe",
                stt_pb2.StreamingTranscribeRequest.DESCRIPTOR, True, True,
                [stt_pb2.StreamingTranscribeRequest(config=recognition),
                 stt_pb2.StreamingTranscribeRequest(audio=pcm)]),
            Rpc("voxline.v1.SpeechToText", "Listen", stt_pb2.ListenRequest.DESCRIPTOR, True, True,
                [stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(recognition=recognition)),
                 stt_pb2.ListenRequest(audio=pcm), stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn())]),
        ],
        "llm": [
            Rpc("voxline.v1.LanguageModel", "Generate", llm_pb2.GenerateRequest.DESCRIPTOR, False, True,
                [llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])]),
            Rpc("voxline.v1.LanguageModel", "ListProviders", llm_pb2.ListProvidersRequest.DESCRIPTOR,
                False, False, [llm_pb2.ListProvidersRequest()]),
        ],
        "tts": [
            Rpc("voxline.v1.TextToSpeech", "Synthesize", tts_pb2.SynthesizeRequest.DESCRIPTOR, False, True,
                [tts_pb2.SynthesizeRequest(text="Hello there.", voice="espeak:en")], deadline_s=120),
            Rpc("voxline.v1.TextToSpeech", "ListVoices", tts_pb2.ListVoicesRequest.DESCRIPTOR, False,
                False, [tts_pb2.ListVoicesRequest()]),
        ],
        "orchestrator": [
            Rpc("voxline.v1.VoiceAssistant", "Converse", voice_pb2.ConverseRequest.DESCRIPTOR, True, True,
                [voice_pb2.ConverseRequest(config=pcm_config()),
                 voice_pb2.ConverseRequest(audio=pcm),
                 voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()),
                 voice_pb2.ConverseRequest(text="What is the capital of France?")], deadline_s=60),
        ],
    }


async def good_stt(channel: grpc.aio.Channel) -> None:
    request = stt_pb2.TranscribeRequest(config=stt_pb2.RecognitionConfig(
        format=audio_pb2.AudioFormat(encoding=audio_pb2.WAV)), audio=_wav(tone_pcm(0.5)))
    await stt_pb2_grpc.SpeechToTextStub(channel).Transcribe(request, timeout=60)


async def good_tts(channel: grpc.aio.Channel) -> None:
    stub = tts_pb2_grpc.TextToSpeechStub(channel)
    chunks = [r async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text="Hello.",
                                                                          voice="espeak:en"), timeout=60)]
    assert len(chunks) >= 2, "no audio"


async def good_llm(channel: grpc.aio.Channel) -> None:
    stub = llm_pb2_grpc.LanguageModelStub(channel)
    request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")],
                                      sampling=llm_pb2.SamplingOptions(max_tokens=4))
    text = "".join([r.text_delta async for r in stub.Generate(request, timeout=300)])
    assert text, "empty reply"


async def good_orchestrator(channel: grpc.aio.Channel) -> None:
    session = Session(channel)
    try:
        result = await session.turn(timeout_s=30)
        assert result.status == COMPLETED, f"{result.status}: {result.error}"
    finally:
        session.cancel()


@contextlib.asynccontextmanager
async def scripted_gateway() -> Any:
    """The real gateway (servicer, engine, router) in this process over two scripted providers."""
    providers = [faults.ScriptedProvider("cerebras"), faults.ScriptedProvider("groq")]
    config = LlmConfig(providers=("cerebras", "groq"), local_model="none", hedge_delay="off",
                       cache_max_words=0)
    engine = LanguageModelEngine(providers, config)
    servicer = LanguageModelServicer(engine)
    spec = ServiceSpec(name="voxline-llm-fuzz", grpc_services=[SERVICE_NAME],
                       register=lambda s: llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, s),
                       warm_up=engine.warm_up)
    running: RunningServer = await start_server(spec, ServerConfig(port=0))
    try:
        await running.warm_up()
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0)


Echo = Callable[[str], None]


def _rows(matrix: Matrix, label: str) -> Callable[[str], Row]:
    def row(family: str) -> Row:
        return matrix.row("fuzz", f"{label} {family}")

    return row


async def run_suite(sizes: Sizes, log_dir: Path, echo: Echo = print, seed: int = 10,
                    only: tuple[str, ...] = ("fuzz", "resources", "fault", "load", "live")) -> Matrix:
    """Everything, in order: fuzz, resources, faults, load, the live path (server VAD under
    faults, on a stack of its own under the supervisor). Returns the matrix."""
    from bench.suite.stacks import start_stack

    matrix = Matrix()
    started = time.monotonic()
    if not sizes.processes:
        async with scripted_gateway() as llm_address:
            for rpc in rpcs()["llm"]:
                await fuzz_rpc(llm_address, rpc, sizes.fuzz_per_rpc, seed, _rows(matrix, rpc.label),
                               good_llm)
        await faults.provider_faults(matrix, sizes.provider_repeats)
        echo(f"reliability: in-process cases done in {time.monotonic() - started:.0f} s")
        return matrix
    cleanup: list[Callable[[], Any]] = []
    try:
        echo("reliability: starting the fake stack, STT and TTS")
        stack = await asyncio.to_thread(start_stack, "fake", log_dir / "fake-stack")
        cleanup.append(stack.stop)
        stt = None
        if sizes.real_stt:
            stt = await asyncio.to_thread(procs.start, "stt", [], log_dir)
            cleanup.append(stt.stop)
        tts_args = [] if sizes.piper else ["--piper-voices", ""]
        tts = await asyncio.to_thread(procs.start, "tts", tts_args, log_dir)
        cleanup.append(tts.stop)
        orch_address = stack.address("orchestrator")
        orch_pid = stack.pids["orchestrator"]
        async with scripted_gateway() as llm_address:
            targets: dict[str, tuple[str, Callable[[grpc.aio.Channel], Awaitable[None]]]] = {
                "llm": (llm_address, good_llm), "tts": (tts.address, good_tts),
                "orchestrator": (orch_address, good_orchestrator)}
            if stt is not None:
                targets["stt"] = (stt.address, good_stt)
            if "fuzz" in only:
                for service, methods in rpcs().items():
                    if service not in targets:
                        continue
                    address, good = targets[service]
                    for rpc in methods:
                        echo(f"reliability: fuzz {rpc.label} ({sizes.fuzz_per_rpc} cases)")
                        await fuzz_rpc(address, rpc, sizes.fuzz_per_rpc, seed,
                                       _rows(matrix, rpc.label), good)
            if "resources" in only:
                echo("reliability: resource checks")
                if stt is not None:
                    await bombs.run_bombs(matrix, stt.address, stt.proc.pid,
                                          bombs.stt_bombs(sizes.flac_minutes), good_stt,
                                          sizes.bomb_repeats)
                    if stt.log_path is not None:  # the live path (issue 20): Listen attacks
                        await live_stt.run_live_path(matrix, stt.address, stt.proc.pid, stt.log_path,
                                                     small=True, echo=echo)
                tts_bombs = [b for b in bombs.tts_bombs() if sizes.piper or "piper" not in b.name]
                await bombs.run_bombs(matrix, tts.address, tts.proc.pid, tts_bombs, good_tts,
                                      sizes.bomb_repeats)
                await bombs.run_bombs(matrix, orch_address, orch_pid,
                                      bombs.orchestrator_bombs(sizes.vad_mib), good_orchestrator,
                                      sizes.bomb_repeats)
                if sizes.local_llm:
                    llm = await asyncio.to_thread(procs.start, "llm", ["--providers", "local"], log_dir)
                    try:
                        await bombs.run_bombs(matrix, llm.address, llm.proc.pid, bombs.llm_bombs(),
                                              good_llm, sizes.bomb_repeats)
                    finally:
                        await asyncio.to_thread(llm.stop)
            if "load" in only:
                echo(f"reliability: load {sizes.sessions} sessions × {sizes.turns} turns")
                await load.sessions(matrix, orch_address, orch_pid, sizes.sessions, sizes.turns)
                await load.abandoned(matrix, orch_address, orch_pid, sizes.abandoned)
                await load.slow_readers(matrix, orch_address, orch_pid, sizes.slow_readers,
                                        sizes.slow_turns, sizes.slow_window_s, sizes.slow_bound_mb)
            if "fault" in only:
                echo("reliability: faults")
                await faults.provider_faults(matrix, sizes.provider_repeats)
                await faults.sigterm_drain(matrix, stack, log_dir, sizes.drain_grace_s)
                await faults.stage_kill(matrix, stack, log_dir, sizes.kills_per_stage)
        if "live" in only:
            full = sizes.sessions >= 16  # FULL: issue 20's figures (8 conversations, 50 sessions)
            echo("reliability: live path (server VAD): STT SIGKILL, memory after sessions")
            await live_orchestrator.run_live(matrix, log_dir / "live", conversations=8 if full else 2,
                                             sessions=50 if full else 4,
                                             session_s=20.0 if full else 3.5,
                                             wide_sessions=10 if full else 2)
    finally:
        for stop in reversed(cleanup):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stop)
    echo(f"reliability: done in {time.monotonic() - started:.0f} s")
    return matrix
